# Shell functions shared by the cluster scripts (sourced, not run).
# Expects RUN (pid and log directory), TIDAL (the binary) and TLS (the
# directory of the CA and the certificates) to be set, and the repository
# root as the working directory. The client calls (cli) use CLIENT_TLS (a
# client certificate's directory) and TOKEN_FILE (an admin token).

# The scripts pass every setting of their own processes explicitly: a
# shell that sourced an env file (TIDAL_TLS_DIR of a client, say) must not
# reach the servers and agents they start.
unset TIDAL_ENDPOINTS TIDAL_TLS_DIR TIDAL_TOKEN TIDAL_INSECURE TIDAL_AUTH

# build_tidal: sets TIDAL to an absolute path, building the release binary if unset.
build_tidal() {
  if [[ -z "${TIDAL:-}" ]]; then
    cargo build --release --bin tidal
    TIDAL=target/release/tidal
  fi
  TIDAL=$(cd "$(dirname "$TIDAL")" && pwd)/$(basename "$TIDAL")
}

# abs PATH: PATH made absolute (its directory must exist).
abs() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }

# https_endpoints HOST:PORT,...: the same list with https:// on each, which
# makes a client refuse to talk to them without TLS.
https_endpoints() { sed -e 's|^|https://|' -e 's|,|,https://|g' <<<"$1"; }

# cli ARGS...: `tidal ARGS...` as the admin: over TLS with the client
# certificate in CLIENT_TLS, presenting the token in TOKEN_FILE.
cli() {
  TIDAL_TLS_DIR=$CLIENT_TLS TIDAL_TOKEN=$(cat "$TOKEN_FILE") "$TIDAL" "$@"
}

# issue_cert OUT ARGS...: `tidal cert issue --ca TLS/ca --out OUT ARGS...`
# unless OUT already holds a certificate (a later start keeps it).
issue_cert() {
  local out=$1
  shift
  [[ -f "$out/cert.pem" ]] && return 0
  rm -rf "$out"
  "$TIDAL" cert issue --ca "$TLS/ca" --out "$out" "$@" >/dev/null
}

# ensure_ca: once, a CA in TLS/ca for `tidal cert issue`. A new CA
# replaces every certificate under TLS (those of a CA that is gone are
# useless).
ensure_ca() {
  [[ -f "$TLS/ca/ca.pem" ]] && return 0
  rm -rf "$TLS"
  "$TIDAL" cert ca --out "$TLS/ca" --name "tidal cluster CA" >/dev/null
  echo "created a CA in $TLS/ca (ca.key signs every certificate: keep it to yourself)"
}

# ensure_token FILE: once, a new token (`tidal token generate`) in FILE,
# readable by its owner only: the servers' --bootstrap-token-file, which
# becomes the first admin token.
ensure_token() {
  [[ -s "$1" ]] && return 0
  (
    umask 077
    "$TIDAL" token generate >"$1.tmp" 2>/dev/null
    mv "$1.tmp" "$1"
  )
}

# ensure_agent_token FILE ENDPOINTS: once, an agent token for every tenant,
# created on the cluster at ENDPOINTS, in FILE (0600).
ensure_agent_token() {
  [[ -s "$1" ]] && return 0
  (
    umask 077
    cli token create --role agent --all-tenants --name cluster-agents \
      --endpoints "$2" >"$1.tmp" 2>/dev/null
    mv "$1.tmp" "$1"
  )
}

# sh_word TEXT: TEXT as one shell word: as it is when it has only plain
# characters, else in single quotes.
sh_word() {
  if [[ -n $1 && $1 =~ ^[A-Za-z0-9/._,:=@+%-]+$ ]]; then
    echo "$1"
  else
    echo "'${1//\'/\'\\\'\'}'"
  fi
}

# write_env FILE ENDPOINTS WHAT: the client's settings (the endpoints, the
# client certificate, the admin token) as a file to source, `. FILE`, in
# the shape of `tidal dev`'s DIR/env; readable by its owner only.
write_env() {
  (
    umask 077
    {
      echo "# $3: \`. $1\` points the tidal CLI at it."
      echo "export TIDAL_ENDPOINTS=$(sh_word "$2")"
      echo "export TIDAL_TLS_DIR=$(sh_word "$CLIENT_TLS")"
      echo "export TIDAL_TOKEN=$(sh_word "$(cat "$TOKEN_FILE")")"
      echo "unset TIDAL_INSECURE"
    } >"$1.tmp"
    # A new file gets the umask's mode; an older, looser one is replaced.
    mv -f "$1.tmp" "$1"
  )
}

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

# start_agent NAME TOKEN_FILE ARGS...: `start NAME agent ARGS...` with the
# agent token of TOKEN_FILE in its environment (TIDAL_TOKEN), not on its
# command line.
start_agent() {
  local name=$1 token_file=$2
  shift 2
  TIDAL_TOKEN=$(cat "$token_file") start "$name" agent "$@"
}

# wait_leader ENDPOINTS: until one of them answers that it is the leader,
# then until the admin token works (the leader makes the bootstrap token
# the first admin token just after the cluster's first election).
wait_leader() {
  local i
  for i in $(seq 1 150); do
    if cli status --endpoints "$1" --output json --timeout-ms 1000 2>/dev/null | grep -q '"role": "leader"'; then
      break
    fi
    if ((i == 150)); then
      echo "error: no leader among $1 after 30s; see $RUN/*.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  for i in $(seq 1 150); do
    cli token list --endpoints "$1" --timeout-ms 1000 >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "error: the token in $TOKEN_FILE is refused by $1 after 30s; see $RUN/*.log" >&2
  exit 1
}

# start_server PREFIX N CONFIG: `tidal server --config CONFIG` as PREFIX-nodeN,
# with the flags in the array SERVER_ARGS_N (if set) after it.
start_server() {
  local -n extra="SERVER_ARGS_$2"
  start "${1}node$2" server --config "$3" ${extra[@]+"${extra[@]}"}
}

# start_dc PREFIX DATA_DIR ENDPOINTS CONFIG...: starts a 3-node DC from three
# config files (node 1 initialises it) and joins nodes 2 and 3. The process
# names are PREFIX-node1..3 (PREFIX may be empty). ENDPOINTS are the
# members' HOST:PORT addresses. SERVER_ARGS_1..3 (arrays, may be unset) are
# added to each server's flags. Idempotent: a restart starts all three on
# their data, and the join steps change nothing.
start_dc() {
  local prefix=$1 data=$2 endpoints=$3
  shift 3
  local configs=("$@") first=${endpoints%%,*} https n
  https=$(https_endpoints "$endpoints")
  if [[ -d "$data/node2" || -d "$data/node3" ]]; then
    # A single node cannot elect itself in a 3-node group: start all.
    for n in 1 2 3; do start_server "$prefix" "$n" "${configs[$((n - 1))]}"; done
    wait_leader "$https"
  else
    start_server "$prefix" 1 "${configs[0]}"
    wait_leader "https://$first"
    for n in 2 3; do start_server "$prefix" "$n" "${configs[$((n - 1))]}"; done
  fi
  local addrs
  IFS=, read -r -a addrs <<<"$endpoints"
  for n in 2 3; do
    cli cluster add-learner --id "$n" --addr "${addrs[$((n - 1))]}" --endpoints "$https" >/dev/null
    cli cluster promote "$n" --endpoints "$https" >/dev/null
  done
  cli cluster members --endpoints "$https"
}

# stop NAME: SIGTERM, then SIGKILL after 10 s, of a process started by `start`.
stop() {
  local name=$1 pidfile="$RUN/$1.pid" pid
  [[ -f "$pidfile" ]] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
      echo "killed $name (pid $pid) after 10s"
    else
      echo "stopped $name (pid $pid)"
    fi
  fi
  rm -f "$pidfile"
}
