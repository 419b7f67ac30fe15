#!/usr/bin/env bash
# Starts two local data centers, dc-a (127.0.0.1:7201..7203) and dc-b
# (127.0.0.1:7301..7303), 3 servers each, from cluster/two-dc/*.toml; each
# names the other as its peer. dc-a gets an agent for t2i (sdxl), dc-b one
# for tts (vits) and sr (esrgan), so tts and sr work submitted in dc-a is
# forwarded to dc-b and its state and result come back to dc-a.
#
# Secure by default, as start.sh: on the first start, one CA and the
# certificates of both DCs (cluster/data/two-dc/tls: ca, dc-a-node-1..3,
# dc-b-node-1..3, a-gpu-1, b-gpu-1, client), one bootstrap admin token for
# both (admin.token) and an agent token per DC (dc-a-agent.token,
# dc-b-agent.token); the client's settings go to env (dc-a) and env-dc-b.
#
# Pids and logs go to cluster/run/two-dc/, data to cluster/data/two-dc/.
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
DATA=$(pwd)/cluster/data/two-dc
TLS=$DATA/tls
CLIENT_TLS=$TLS/client
TOKEN_FILE=$DATA/admin.token
mkdir -p "$RUN" "$DATA/dc-a" "$DATA/dc-b"

ensure_ca
for dc in dc-a dc-b; do
  for n in 1 2 3; do issue_cert "$TLS/$dc-node-$n" --role server --dc "$dc" --name "$n"; done
done
issue_cert "$TLS/a-gpu-1" --role agent --dc dc-a --name a-gpu-1
issue_cert "$TLS/b-gpu-1" --role agent --dc dc-b --name b-gpu-1
issue_cert "$CLIENT_TLS" --role client --name admin
ensure_token "$TOKEN_FILE"

for dc in dc-a dc-b; do
  if [[ $dc == dc-a ]]; then eps=$A; else eps=$B; fi
  start_dc "$dc-" "$DATA/$dc" "$eps" \
    "cluster/two-dc/$dc-node1.toml" "cluster/two-dc/$dc-node2.toml" "cluster/two-dc/$dc-node3.toml"
  cli queue set vip --weight 8 --endpoints "$(https_endpoints "$eps")" >/dev/null
  ensure_agent_token "$DATA/$dc-agent.token" "$(https_endpoints "$eps")"
done
cli queue set local --weight 1 --endpoints "$(https_endpoints "$A")" >/dev/null
write_env "$DATA/env" "$(https_endpoints "$A")" "cluster/two-dc/start.sh, dc dc-a"
write_env "$DATA/env-dc-b" "$(https_endpoints "$B")" "cluster/two-dc/start.sh, dc dc-b"

start_agent dc-a-agent-1 "$DATA/dc-a-agent.token" --id a-gpu-1 --dc dc-a --task-types t2i \
  --models sdxl --slots 2 --gpus A100:81920 --endpoints "$(https_endpoints "$A")" \
  --tls-dir "$TLS/a-gpu-1" -- "$TIDAL" example-worker
start_agent dc-b-agent-1 "$DATA/dc-b-agent.token" --id b-gpu-1 --dc dc-b --task-types tts,sr \
  --models vits,esrgan --slots 2 --gpus L40S:46068 --endpoints "$(https_endpoints "$B")" \
  --tls-dir "$TLS/b-gpu-1" -- "$TIDAL" example-worker

cat <<MSG

Two DCs are up, over mutual TLS with tokens. Submit in dc-a a task only dc-b can run, and follow it from dc-a:
  . $DATA/env        # dc-a's endpoints, the client certificate, the admin token
  $TIDAL task submit --type tts --models vits --payload "hello from dc-a"
  $TIDAL task watch <ID>       # forwarded, then dc-b's states, then its result
  $TIDAL dc status             # the link to dc-b: state, outbox, dc-b's agents
  $TIDAL task list --endpoints $(https_endpoints "$B")
Stop them with cluster/two-dc/stop.sh (add --clean to delete their data, certificates, tokens and logs).
MSG
