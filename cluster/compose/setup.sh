#!/usr/bin/env bash
# tidal-compose: the steps of cluster/compose/docker-compose.yml that are
# more than one `tidal` command (installed in the image as
# /usr/local/bin/tidal-compose).
#
#   tidal-compose secrets
#       Once: a CA in $CA_DIR, and in $DIR/tls the certificates of the
#       servers (node-1..3, also valid for the host names node1..node3),
#       the agents (agent-1, agent-2) and a client (client, any DC); the
#       bootstrap admin token $DIR/admin.token (0600). A later run keeps
#       what exists, as cluster/start.sh does.
#   tidal-compose join
#       Once the servers run: waits until node 1 leads and the admin token
#       works, joins nodes 2 and 3 (add-learner, promote: no-ops when they
#       are members already), sets the queues vip (8) and normal (2), and
#       creates the agents' token $DIR/agent.token (0600) once.
#   tidal-compose with-token FILE COMMAND...
#       Runs COMMAND with TIDAL_TOKEN set to the token in FILE, so the
#       token is never on a command line.
#
# Environment: DIR (default /tidal), CA_DIR (default /tidal-ca), TIDAL (the
# binary, default tidal), ADDRS (the servers' --advertise addresses, default
# node1:7001,node2:7001,node3:7001), ENDPOINTS (default ADDRS with
# https://), DC (default dc1).
set -euo pipefail

DIR=${DIR:-/tidal}
CA_DIR=${CA_DIR:-/tidal-ca}
TIDAL=${TIDAL:-tidal}
DC=${DC:-dc1}
ADDRS=${ADDRS:-node1:7001,node2:7001,node3:7001}
ENDPOINTS=${ENDPOINTS:-$(sed -e 's|^|https://|' -e 's|,|,https://|g' <<<"$ADDRS")}
# Only what this script passes reaches the commands it runs.
unset TIDAL_ENDPOINTS TIDAL_TLS_DIR TIDAL_TOKEN TIDAL_INSECURE TIDAL_AUTH

# issue OUT ARGS...: a certificate signed by the CA in OUT, unless OUT has one.
issue() {
  local out=$1
  shift
  [[ -f "$out/cert.pem" ]] && return 0
  rm -rf "$out"
  "$TIDAL" cert issue --ca "$CA_DIR" --out "$out" "$@" >/dev/null
  echo "issued $out"
}

secrets() {
  umask 077
  mkdir -p "$DIR/tls"
  if [[ ! -f "$CA_DIR/ca.pem" ]]; then
    # A new CA: certificates of an older one are useless.
    rm -rf "${CA_DIR:?}"/* "$DIR/tls"/*
    "$TIDAL" cert ca --out "$CA_DIR" --name "tidal compose CA" >/dev/null
    echo "created a CA in $CA_DIR"
  fi
  local n
  for n in 1 2 3; do
    issue "$DIR/tls/node-$n" --role server --dc "$DC" --name "$n" --host "node$n"
  done
  issue "$DIR/tls/agent-1" --role agent --dc "$DC" --name agent-1
  issue "$DIR/tls/agent-2" --role agent --dc "$DC" --name agent-2
  issue "$DIR/tls/client" --role client --name admin
  if [[ ! -s "$DIR/admin.token" ]]; then
    "$TIDAL" token generate >"$DIR/admin.token.tmp" 2>/dev/null
    mv "$DIR/admin.token.tmp" "$DIR/admin.token"
    echo "created the bootstrap admin token $DIR/admin.token"
  fi
}

# admin ARGS...: `tidal ARGS...` as the admin, over TLS, at ENDPOINTS.
admin() {
  TIDAL_TOKEN=$(cat "$DIR/admin.token") "$TIDAL" "$@" \
    --endpoints "$ENDPOINTS" --tls-dir "$DIR/tls/client"
}

join() {
  local first=${ENDPOINTS%%,*} i
  for i in $(seq 1 300); do
    if TIDAL_TOKEN=$(cat "$DIR/admin.token") "$TIDAL" token list --endpoints "$first" \
      --tls-dir "$DIR/tls/client" --timeout-ms 1000 >/dev/null 2>&1; then
      break
    fi
    if ((i == 300)); then
      echo "error: $first did not lead with the admin token working after 60 s" >&2
      exit 1
    fi
    sleep 0.2
  done
  local addrs n
  IFS=, read -r -a addrs <<<"$ADDRS"
  for n in 2 3; do
    admin cluster add-learner --id "$n" --addr "${addrs[$((n - 1))]}" >/dev/null
    admin cluster promote "$n" >/dev/null
  done
  admin queue set vip --weight 8 >/dev/null
  admin queue set normal --weight 2 >/dev/null
  if [[ ! -s "$DIR/agent.token" ]]; then
    (
      umask 077
      admin token create --role agent --all-tenants --name compose-agents >"$DIR/agent.token.tmp"
      mv "$DIR/agent.token.tmp" "$DIR/agent.token"
    )
  fi
  admin cluster members
}

case "${1:-}" in
  secrets) secrets ;;
  join) join ;;
  with-token)
    [[ $# -ge 3 ]] || {
      echo "usage: tidal-compose with-token FILE COMMAND..." >&2
      exit 2
    }
    file=$2
    shift 2
    TIDAL_TOKEN=$(cat "$file")
    export TIDAL_TOKEN
    exec "$@"
    ;;
  *)
    echo "usage: tidal-compose secrets | join | with-token FILE COMMAND..." >&2
    exit 2
    ;;
esac
