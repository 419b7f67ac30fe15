#!/usr/bin/env bash
# Stops what cluster/start.sh started: agents first, then servers (SIGTERM,
# then SIGKILL after 10 s). With --clean, also deletes its data
# (cluster/data/node1..3) and logs.
set -euo pipefail

cd "$(dirname "$0")/.."
RUN=cluster/run

# shellcheck source=cluster/lib.sh
source cluster/lib.sh

for name in agent-1 agent-2 node3 node2 node1; do stop "$name"; done

if [[ "${1:-}" == "--clean" ]]; then
  rm -rf cluster/data/node1 cluster/data/node2 cluster/data/node3
  rm -f "$RUN"/*.log "$RUN"/*.pid
  echo "deleted cluster/data/node1..3 and the logs in $RUN"
fi
