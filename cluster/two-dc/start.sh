#!/usr/bin/env bash
# Starts two local data centers, dc-a (127.0.0.1:7201..7203) and dc-b
# (127.0.0.1:7301..7303), 3 servers each, from cluster/two-dc/*.toml; each
# names the other as its peer. dc-a gets an agent for t2i (sdxl), dc-b one
# for tts (vits) and sr (esrgan), so tts and sr work submitted in dc-a is
# forwarded to dc-b and its state and result come back to dc-a.
#
# Pids and logs go to cluster/run/two-dc/, data to cluster/data/dc-{a,b}/.
# Stop with cluster/two-dc/stop.sh. Environment: TIDAL=path/to/tidal uses
# that binary (default: cargo build --release).
set -euo pipefail

cd "$(dirname "$0")/../.."
RUN=cluster/run/two-dc
A=127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203
B=127.0.0.1:7301,127.0.0.1:7302,127.0.0.1:7303

# shellcheck source=cluster/lib.sh
source cluster/lib.sh
build_tidal
mkdir -p "$RUN" cluster/data/dc-a cluster/data/dc-b

for dc in dc-a dc-b; do
  if [[ $dc == dc-a ]]; then eps=$A; else eps=$B; fi
  start_dc "$dc-" "cluster/data/$dc" "$eps" \
    "cluster/two-dc/$dc-node1.toml" "cluster/two-dc/$dc-node2.toml" "cluster/two-dc/$dc-node3.toml"
  "$TIDAL" queue set vip --weight 8 --endpoints "$eps" >/dev/null
done
"$TIDAL" queue set local --weight 1 --endpoints "$A" >/dev/null

start dc-a-agent-1 agent --id a-gpu-1 --dc dc-a --task-types t2i --models sdxl --slots 2 \
  --gpus A100:81920 --endpoints "$A" -- "$TIDAL" example-worker
start dc-b-agent-1 agent --id b-gpu-1 --dc dc-b --task-types tts,sr --models vits,esrgan --slots 2 \
  --gpus L40S:46068 --endpoints "$B" -- "$TIDAL" example-worker

cat <<MSG

Two DCs are up. Submit in dc-a a task only dc-b can run, and follow it from dc-a:
  export TIDAL_ENDPOINTS=$A
  $TIDAL task submit --type tts --models vits --payload "hello from dc-a"
  $TIDAL task watch <ID>       # forwarded, then dc-b's states, then its result
  $TIDAL dc status             # the link to dc-b: state, outbox, dc-b's agents
  $TIDAL task list --endpoints $B
Stop them with cluster/two-dc/stop.sh (add --clean to delete their data and logs).
MSG
