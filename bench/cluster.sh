#!/usr/bin/env bash
# Rill vs Apache Kafka as 3-broker clusters (replication factor 3, acks=all), written to
# bench/results/<date>-cluster.md/.json.
#
#   bash bench/cluster.sh            both clusters, 3 runs per row (~15-20 min on 2 cores)
#   bash bench/cluster.sh --help     every option (runs, seconds, rate, targets, heap, ...)
#
# Installs what it needs first (idempotent, tests/tools/install.sh: the pinned Apache
# Kafka jars and the e2e venv, whose Python has what tests/e2e/cluster_process.py imports),
# then runs bench/cluster.py with that venv's Python.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${RILL_CACHE:-$HOME/.cache/rill}"

bash "$ROOT/tests/tools/install.sh"
exec "$CACHE/venv/bin/python" "$ROOT/bench/cluster.py" "$@"
