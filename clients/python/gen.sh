#!/usr/bin/env bash
# Regenerates the Python stubs of proto/tidal.proto (tidal/_proto/) with grpcio-tools.
# Usage: gen.sh [OUT_DIR]   (default: tidal/_proto beside this script)
# Needs a python with the grpcio-tools of crates/tidal-cli/tests/py/requirements.txt
# (PYTHON, else python3). The stubs are checked in; tests/test_stubs.py fails
# when they differ from what this script makes from proto/.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
proto="$here/../../proto"
out=${1:-"$here/tidal/_proto"}
python=${PYTHON:-python3}

if ! "$python" -c 'import grpc_tools' 2>/dev/null; then
  echo "error: $python has no grpc_tools: pip install -r crates/tidal-cli/tests/py/requirements.txt (or set PYTHON)" >&2
  exit 1
fi
mkdir -p "$out"
"$python" -m grpc_tools.protoc -I "$proto" --python_out="$out" --grpc_python_out="$out" "$proto/tidal.proto"
# The generated service module imports its messages as a top-level module;
# inside the package it must import them relatively.
sed -i 's/^import tidal_pb2 as tidal__pb2$/from . import tidal_pb2 as tidal__pb2/' "$out/tidal_pb2_grpc.py"
cat >"$out/__init__.py" <<'PY'
"""Stubs generated from proto/tidal.proto by clients/python/gen.sh; do not edit."""
PY
