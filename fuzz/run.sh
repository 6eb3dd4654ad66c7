#!/usr/bin/env bash
# Runs each fuzz target for a bounded time from its checked-in seed corpus and prints
# libFuzzer's figures (executions, executions per second). A crash, a panic, an
# allocation over -malloc_limit_mb or RSS over -rss_limit_mb fails the run and keeps
# the input under $RILL_CACHE/fuzz-artifacts/<target>/.
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
set -euo pipefail
cd "$(dirname "$0")"
CACHE="${RILL_CACHE:-$HOME/.cache/rill}"
SECONDS_PER_TARGET="${1:-60}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || mapfile -t TARGETS < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^rill-fuzz$')
# cargo finds its `fuzz` subcommand on PATH: the one tests/tools/install.sh put in the cache.
export PATH="$CACHE/cargo-fuzz/bin:$PATH"
# The build lives in the cache: a clean clone reuses it.
TARGET_DIR="$CACHE/fuzz-target"

for t in "${TARGETS[@]}"; do
  work="$(mktemp -d)"
  artifacts="$CACHE/fuzz-artifacts/$t/"
  mkdir -p "$artifacts"
  echo "fuzz: $t for ${SECONDS_PER_TARGET}s (seeds: fuzz/corpus/$t, $(ls "corpus/$t" | wc -l) files)"
  # New inputs go to a scratch corpus; the checked-in seeds are read only.
  if ! cargo +nightly fuzz run --target-dir "$TARGET_DIR" "$t" "$work" "corpus/$t" -- \
      -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
      -artifact_prefix="$artifacts" -print_final_stats=1 >"$work.log" 2>&1; then
    tail -60 "$work.log"
    echo "fuzz: $t FAILED; the input is in $artifacts" >&2
    exit 1
  fi
  grep -E '^Done [0-9]+ runs|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb' "$work.log"
  rm -rf "$work" "$work.log"
done
