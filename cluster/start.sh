#!/usr/bin/env bash
# Starts the local 3-node cluster described by cluster/node{1,2,3}.toml and
# AGENTS (default 2) agents in the background, joins nodes 2 and 3 with the
# CLI, and creates the queues vip (weight 8) and normal (weight 2).
#
# Pids and logs go to cluster/run/, data to cluster/data/. Stop with
# cluster/stop.sh. Running start.sh again restarts a stopped cluster from its
# data. Environment:
#   TIDAL=path/to/tidal  use this binary (default: cargo build --release)
#   AGENTS=N             how many agents (0, 1 or 2; default 2)
set -euo pipefail

cd "$(dirname "$0")/.."
RUN=cluster/run
ENDPOINTS=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
AGENTS=${AGENTS:-2}

if [[ -z "${TIDAL:-}" ]]; then
  cargo build --release --bin tidal
  TIDAL=target/release/tidal
fi
TIDAL=$(cd "$(dirname "$TIDAL")" && pwd)/$(basename "$TIDAL")
mkdir -p "$RUN" cluster/data

running() { [[ -f "$RUN/$1.pid" ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# start NAME ARGS...: runs `tidal ARGS...` in the background, logging to $RUN/NAME.log.
start() {
  local name=$1
  shift
  if running "$name"; then
    echo "$name is already running (pid $(cat "$RUN/$name.pid"))"
    return
  fi
  "$TIDAL" "$@" >>"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
  echo "started $name (pid $!, log $RUN/$name.log)"
}

# wait_leader ENDPOINTS: until one of them answers that it is the leader.
wait_leader() {
  for _ in $(seq 1 150); do
    if "$TIDAL" status --endpoints "$1" --output json --timeout-ms 1000 2>/dev/null | grep -q '"role": "leader"'; then
      return 0
    fi
    sleep 0.2
  done
  echo "error: no leader among $1 after 30s; see $RUN/node*.log" >&2
  exit 1
}

if [[ -d cluster/data/node2 || -d cluster/data/node3 ]]; then
  # A restart: a single node cannot elect itself in a 3-node group, so start all.
  for n in 1 2 3; do start "node$n" server --config "cluster/node$n.toml"; done
  wait_leader "$ENDPOINTS"
else
  start node1 server --config cluster/node1.toml
  wait_leader 127.0.0.1:7001
  for n in 2 3; do start "node$n" server --config "cluster/node$n.toml"; done
fi

# Joining is idempotent: a member already present is left as it is.
for n in 2 3; do
  "$TIDAL" cluster add-learner --id "$n" --addr "127.0.0.1:700$n" --endpoints "$ENDPOINTS" >/dev/null
  "$TIDAL" cluster promote "$n" --endpoints "$ENDPOINTS" >/dev/null
done
"$TIDAL" cluster members --endpoints "$ENDPOINTS"

"$TIDAL" queue set vip --weight 8 --endpoints "$ENDPOINTS" >/dev/null
"$TIDAL" queue set normal --weight 2 --endpoints "$ENDPOINTS" >/dev/null

# The agents run the built-in demo worker; put your own command after `--`.
if ((AGENTS >= 1)); then
  start agent-1 agent --id agent-1 --dc dc1 --task-types t2i,tts --models sdxl,vits --slots 2 \
    --gpus A100:81920 --labels zone=a --endpoints "$ENDPOINTS" -- "$TIDAL" example-worker
fi
if ((AGENTS >= 2)); then
  start agent-2 agent --id agent-2 --dc dc1 --task-types t2i,sr,i2i --models sdxl,flux,esrgan --slots 2 \
    --gpus L40S:46068 --labels zone=b --endpoints "$ENDPOINTS" -- "$TIDAL" example-worker
fi

cat <<MSG

The cluster is up. Try:
  export TIDAL_ENDPOINTS=$ENDPOINTS
  $TIDAL task submit --type t2i --models sdxl --queue vip --payload "a red fox"
  $TIDAL task watch <ID>
  $TIDAL agent list
  $TIDAL status
Stop it with cluster/stop.sh (add --clean to delete its data and logs).
MSG
