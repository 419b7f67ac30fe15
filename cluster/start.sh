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

# shellcheck source=cluster/lib.sh
source cluster/lib.sh
build_tidal
mkdir -p "$RUN" cluster/data

start_dc "" cluster/data "$ENDPOINTS" cluster/node1.toml cluster/node2.toml cluster/node3.toml

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
