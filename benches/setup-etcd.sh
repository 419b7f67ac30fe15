#!/usr/bin/env bash
# Installs etcd for `tidal-bench --compare etcd`: Debian's etcd-server
# package (etcd 3.4 on bookworm). Stops the service the package may start;
# tidal-bench runs its own members on free 127.0.0.1 ports.
set -euo pipefail
if command -v etcd >/dev/null; then
  etcd --version | head -1
  exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server
$SUDO systemctl disable --now etcd 2>/dev/null || true
etcd --version | head -1
