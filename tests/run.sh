#!/usr/bin/env bash
# The project's one test command: `bash tests/run.sh` (CI runs it through .ci/run).
# Installs the test tools into ${RILL_CACHE:-$HOME/.cache/rill}, builds the broker,
# checks formatting and lints, runs the Rust tests, then the end-to-end tests against a
# real broker process with real Kafka clients (kcat, confluent-kafka, kafka-python,
# Apache Kafka's Java client and tools). The fuzz targets in fuzz/ run for a bounded
# time between the Rust tests and the e2e tests.
#
# Environment:
#   RILL_CACHE          tool cache (default ~/.cache/rill)
#   RILL_E2E_TARGET     rill (default) | kafka: run the e2e suite against Apache Kafka
#   RILL_E2E_ARGS       extra pytest arguments, e.g. "-k kcat -x"
#   RILL_FUZZ_SECONDS   how long each fuzz target runs (default 60)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export RILL_CACHE="${RILL_CACHE:-$HOME/.cache/rill}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
START=$SECONDS

section() {
  printf '\n==================== %s ====================\n' "$*"
}
on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    printf '\n==================== FAILED (exit %s) in section: %s, after %ss ====================\n' \
      "$rc" "${CURRENT:-?}" "$((SECONDS - START))"
  fi
}
trap on_exit EXIT

CURRENT="install test tools"
section "$CURRENT"
bash tests/tools/install.sh </dev/null

CURRENT="cargo build --workspace --bins"
section "$CURRENT"
cargo build --workspace --bins

CURRENT="cargo fmt --check"
section "$CURRENT"
cargo fmt --all -- --check

CURRENT="cargo clippy"
section "$CURRENT"
cargo clippy --all-targets -- -D warnings

CURRENT="cargo test"
section "$CURRENT"
cargo test --workspace

CURRENT="fuzz targets (${RILL_FUZZ_SECONDS:-60} s each)"
section "$CURRENT"
bash fuzz/run.sh "${RILL_FUZZ_SECONDS:-60}"

CURRENT="e2e tests (pytest, target: ${RILL_E2E_TARGET:-rill})"
section "$CURRENT"
# shellcheck disable=SC2086
"$RILL_CACHE/venv/bin/pytest" -v -p no:cacheprovider tests/e2e ${RILL_E2E_ARGS:-} </dev/null

CURRENT="done"
section "all passed in $((SECONDS - START))s"
