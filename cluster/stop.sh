#!/usr/bin/env bash
# Stops what cluster/start.sh started: agents first, then servers (SIGTERM,
# then SIGKILL after 10 s). With --clean, also deletes its data
# (cluster/data/node1..3), its certificates (tls/), its tokens
# (admin.token, agent.token), its env file and its logs. Takes the same
# DATA and RUN as start.sh.
set -euo pipefail

cd "$(dirname "$0")/.."
DATA=${DATA:-cluster/data}
RUN=${RUN:-cluster/run}

# shellcheck source=cluster/lib.sh
source cluster/lib.sh

for name in agent-1 agent-2 node3 node2 node1; do stop "$name"; done

if [[ "${1:-}" == "--clean" ]]; then
  rm -rf "$DATA/node1" "$DATA/node2" "$DATA/node3" "$DATA/tls"
  rm -f "$DATA/admin.token" "$DATA/agent.token" "$DATA/env"
  rm -f "$RUN"/*.log "$RUN"/*.pid
  echo "deleted $DATA/{node1..3,tls,admin.token,agent.token,env} and the logs in $RUN"
fi
