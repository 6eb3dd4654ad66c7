#!/usr/bin/env bash
# The one command: Rill vs Apache Kafka benchmarks, written to bench/results/<date>.md/.png.
#
#   bash bench/run.sh            full matrix (~20-25 min on 2 cores)
#   bash bench/run.sh --quick    a short smoke matrix (~3 min)
#   bash bench/run.sh --help     every option (runs, seconds per run, workloads, ...)
#
# Installs what it needs first (idempotent): the e2e tools (tests/tools/install.sh: the
# pinned Apache Kafka jars from Maven Central into ${RILL_CACHE:-~/.cache/rill}) and a
# separate venv with matplotlib for the chart ($RILL_CACHE/bench-venv).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${RILL_CACHE:-$HOME/.cache/rill}"
MATPLOTLIB_VERSION=3.11.2

bash "$ROOT/tests/tools/install.sh"

VENV="$CACHE/bench-venv"
STAMP="$VENV/.rill-bench-pins"
WANT="matplotlib==$MATPLOTLIB_VERSION"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  echo "[bench] venv: present ($VENV)"
else
  echo "[bench] venv: installing $WANT"
  [ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$WANT"
  "$VENV/bin/python" -c 'import matplotlib'
  echo "$WANT" >"$STAMP"
fi

exec "$VENV/bin/python" "$ROOT/bench/run.py" "$@"
