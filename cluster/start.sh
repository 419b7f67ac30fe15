#!/usr/bin/env bash
# Starts the local 3-node cluster described by cluster/node{1,2,3}.toml and
# AGENTS (default 2) agents in the background, joins nodes 2 and 3 with the
# CLI, and creates the queues vip (weight 8) and normal (weight 2).
#
# Secure by default, as on real machines: on its first start it creates,
# under the data directory, a CA and certificates (tls/: ca, node-1..3,
# agent-1..2, client), the bootstrap admin token (admin.token, 0600) and,
# once the cluster is up, an agent token for every tenant (agent.token).
# Servers serve mutual TLS only and ask every call for a token (auth =
# "tokens"); the agents present their certificate and the agent token. It
# writes the client's settings to DATA/env (0600): `. cluster/data/env`.
#
# Pids and logs go to cluster/run/, data to cluster/data/. Stop with
# cluster/stop.sh. Running start.sh again restarts a stopped cluster from its
# data. Environment:
#   TIDAL=path/to/tidal  use this binary (default: cargo build --release)
#   AGENTS=N             how many agents (0, 1 or 2; default 2)
#   DATA=DIR             data, certificates, tokens and env here instead of
#                        cluster/data (passed to the servers as flags)
#   RUN=DIR              pids and logs here instead of cluster/run
#   ADDRS=H:P,H:P,H:P    the three servers' addresses instead of
#                        127.0.0.1:7001..7003 (passed as --listen/--advertise)
set -euo pipefail

cd "$(dirname "$0")/.."
DEFAULT_ADDRS=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
ADDRS=${ADDRS:-$DEFAULT_ADDRS}
DATA=${DATA:-cluster/data}
RUN=${RUN:-cluster/run}
AGENTS=${AGENTS:-2}

# shellcheck source=cluster/lib.sh
source cluster/lib.sh
build_tidal
mkdir -p "$RUN" "$DATA"
DATA=$(abs "$DATA")
TLS=$DATA/tls
CLIENT_TLS=$TLS/client
TOKEN_FILE=$DATA/admin.token
ENDPOINTS=$(https_endpoints "$ADDRS")

ensure_ca
for n in 1 2 3; do issue_cert "$TLS/node-$n" --role server --dc dc1 --name "$n"; done
for a in agent-1 agent-2; do issue_cert "$TLS/$a" --role agent --dc dc1 --name "$a"; done
issue_cert "$CLIENT_TLS" --role client --name admin
ensure_token "$TOKEN_FILE"

# The node files name cluster/data and 127.0.0.1:7001..7003; another DATA or
# ADDRS is passed as flags, which win over the file.
IFS=, read -r -a addrs <<<"$ADDRS"
for n in 1 2 3; do
  declare -a "SERVER_ARGS_$n=()"
  declare -n args="SERVER_ARGS_$n"
  if [[ $DATA != "$(abs cluster/data)" ]]; then
    args+=(--data "$DATA/node$n" --tls-dir "$TLS/node-$n" --bootstrap-token-file "$TOKEN_FILE")
  fi
  if [[ $ADDRS != "$DEFAULT_ADDRS" ]]; then
    args+=(--listen "${addrs[$((n - 1))]}" --advertise "${addrs[$((n - 1))]}")
  fi
  unset -n args
done

start_dc "" "$DATA" "$ADDRS" cluster/node1.toml cluster/node2.toml cluster/node3.toml

cli queue set vip --weight 8 --endpoints "$ENDPOINTS" >/dev/null
cli queue set normal --weight 2 --endpoints "$ENDPOINTS" >/dev/null
ensure_agent_token "$DATA/agent.token" "$ENDPOINTS"
write_env "$DATA/env" "$ENDPOINTS" "cluster/start.sh, dc dc1"

# The agents run the built-in demo worker; put your own command after `--`.
if ((AGENTS >= 1)); then
  start_agent agent-1 "$DATA/agent.token" --id agent-1 --dc dc1 --task-types t2i,tts \
    --models sdxl,vits --slots 2 --gpus A100:81920 --labels zone=a \
    --endpoints "$ENDPOINTS" --tls-dir "$TLS/agent-1" -- "$TIDAL" example-worker
fi
if ((AGENTS >= 2)); then
  start_agent agent-2 "$DATA/agent.token" --id agent-2 --dc dc1 --task-types t2i,sr,i2i \
    --models sdxl,flux,esrgan --slots 2 --gpus L40S:46068 --labels zone=b \
    --endpoints "$ENDPOINTS" --tls-dir "$TLS/agent-2" -- "$TIDAL" example-worker
fi

cat <<MSG

The cluster is up, over mutual TLS with tokens. Try:
  . $DATA/env        # TIDAL_ENDPOINTS, TIDAL_TLS_DIR (a client certificate) and TIDAL_TOKEN (admin)
  $TIDAL task submit --type t2i --models sdxl --queue vip --payload "a red fox"
  $TIDAL task watch <ID>
  $TIDAL agent list
  $TIDAL status
Certificates are in $TLS (ca/ca.key signs them all), the admin token in
$TOKEN_FILE, the agents' token in $DATA/agent.token.
Stop it with cluster/stop.sh (add --clean to delete its data, certificates, tokens and logs).
MSG
