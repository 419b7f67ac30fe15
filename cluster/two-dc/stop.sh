#!/usr/bin/env bash
# Stops what cluster/two-dc/start.sh started: agents, then servers. With
# --clean, also deletes cluster/data/two-dc (data, certificates, tokens,
# env files) and cluster/run/two-dc.
set -euo pipefail

cd "$(dirname "$0")/../.."
RUN=cluster/run/two-dc
# shellcheck source=cluster/lib.sh
source cluster/lib.sh

for name in dc-a-agent-1 dc-b-agent-1; do stop "$name"; done
for dc in dc-a dc-b; do
  for n in 3 2 1; do stop "$dc-node$n"; done
done

if [[ "${1:-}" == "--clean" ]]; then
  rm -rf cluster/data/two-dc "$RUN"
  echo "deleted cluster/data/two-dc and $RUN"
fi
