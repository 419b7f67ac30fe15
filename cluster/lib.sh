# Shell functions shared by the cluster scripts (sourced, not run).
# Expects RUN (pid and log directory) and TIDAL (the binary) to be set, and
# the repository root as the working directory.

# build_tidal: sets TIDAL to an absolute path, building the release binary if unset.
build_tidal() {
  if [[ -z "${TIDAL:-}" ]]; then
    cargo build --release --bin tidal
    TIDAL=target/release/tidal
  fi
  TIDAL=$(cd "$(dirname "$TIDAL")" && pwd)/$(basename "$TIDAL")
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

# wait_leader ENDPOINTS: until one of them answers that it is the leader.
wait_leader() {
  for _ in $(seq 1 150); do
    if "$TIDAL" status --endpoints "$1" --output json --timeout-ms 1000 2>/dev/null | grep -q '"role": "leader"'; then
      return 0
    fi
    sleep 0.2
  done
  echo "error: no leader among $1 after 30s; see $RUN/*.log" >&2
  exit 1
}

# start_dc PREFIX DATA_DIR ENDPOINTS CONFIG...: starts a 3-node DC from three
# config files (node 1 initialises it) and joins nodes 2 and 3. The process
# names are PREFIX-node1..3 (PREFIX may be empty). Idempotent: a restart
# starts all three on their data, and the join steps change nothing.
start_dc() {
  local prefix=$1 data=$2 endpoints=$3
  shift 3
  local configs=("$@") first=${endpoints%%,*}
  if [[ -d "$data/node2" || -d "$data/node3" ]]; then
    # A single node cannot elect itself in a 3-node group: start all.
    for n in 1 2 3; do start "${prefix}node$n" server --config "${configs[$((n - 1))]}"; done
    wait_leader "$endpoints"
  else
    start "${prefix}node1" server --config "${configs[0]}"
    wait_leader "$first"
    for n in 2 3; do start "${prefix}node$n" server --config "${configs[$((n - 1))]}"; done
  fi
  local addrs
  IFS=, read -r -a addrs <<<"$endpoints"
  for n in 2 3; do
    "$TIDAL" cluster add-learner --id "$n" --addr "${addrs[$((n - 1))]}" --endpoints "$endpoints" >/dev/null
    "$TIDAL" cluster promote "$n" --endpoints "$endpoints" >/dev/null
  done
  "$TIDAL" cluster members --endpoints "$endpoints"
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
