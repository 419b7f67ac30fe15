#!/usr/bin/env bash
# Stops what cluster/start.sh started: agents first, then servers (SIGTERM,
# then SIGKILL after 10 s). With --clean, also deletes cluster/data and
# cluster/run (all state and logs).
set -euo pipefail

cd "$(dirname "$0")/.."
RUN=cluster/run

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

for name in agent-1 agent-2 node3 node2 node1; do stop "$name"; done

if [[ "${1:-}" == "--clean" ]]; then
  rm -rf cluster/data "$RUN"
  echo "deleted cluster/data and $RUN"
fi
