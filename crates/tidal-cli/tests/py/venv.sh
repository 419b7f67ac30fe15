#!/usr/bin/env bash
# Makes (or reuses) a Python venv at DIR with requirements.txt beside this script installed; prints DIR/bin/python.
# Usage: venv.sh DIR. Reuses DIR while its stamp matches requirements.txt;
# otherwise creates it afresh with python3 -m venv and pip (PyPI). Fails,
# saying why, when python3 or its venv module is missing.
set -euo pipefail

dir=$(realpath -m "$1")
here=$(cd "$(dirname "$0")" && pwd)
req="$here/requirements.txt"
stamp="$dir/tidal-requirements.txt"

if [[ -x "$dir/bin/python" ]] && cmp -s "$req" "$stamp" &&
  "$dir/bin/python" -c 'import grpc, grpc_tools' 2>/dev/null; then
  echo "$dir/bin/python"
  exit 0
fi

python=${PYTHON3:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
  echo "error: $python not found: the forged-peer test needs Python 3 with venv (Debian: apt-get install python3 python3-venv)" >&2
  exit 1
fi
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  echo "error: $python has no venv/ensurepip module (Debian: apt-get install python3-venv)" >&2
  exit 1
fi
rm -rf "$dir"
"$python" -m venv "$dir" >&2
"$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
cp "$req" "$stamp"
echo "$dir/bin/python"
