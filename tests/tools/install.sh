#!/usr/bin/env bash
# Installs every tool the e2e tests need into ${RILL_CACHE:-$HOME/.cache/rill}.
# Idempotent: each step is skipped when its result is already there, so a warm run
# takes a second or two. Versions are pinned in tests/tools/versions.env.
#
#   kcat                       Debian package (system-wide, apt-get)
#   $RILL_CACHE/venv           Python venv: pytest, confluent-kafka, kafka-python + codecs
#   $RILL_CACHE/kafka-jars/V/clients   kafka-clients + kafka-tools and deps (Java tests)
#   $RILL_CACHE/kafka-jars/V/server    kafka_2.13 + deps: a real Apache Kafka broker, used
#                                      only to validate the tests (RILL_E2E_TARGET=kafka)
#   $RILL_CACHE/k8s/<version>/bin      etcd, kube-apiserver, kube-controller-manager,
#                                      kube-scheduler, kubectl, helm (tests/tools/k8s/build.sh)
#                                      for the operator tests (tests/e2e/k8s)
#   $RILL_CACHE/cargo-fuzz/bin        cargo-fuzz (crates.io), for fuzz/run.sh on nightly
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=versions.env
source "$ROOT/tests/tools/versions.env"
CACHE="${RILL_CACHE:-$HOME/.cache/rill}"
mkdir -p "$CACHE"

log() { printf '[install] %s\n' "$*"; }

# Run as root, or through sudo when it is there and needs no password.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"; else
    echo "install.sh: need root for: $*" >&2; return 1; fi
}

# ---- kcat (Debian) ------------------------------------------------------------------
if command -v kcat >/dev/null 2>&1; then
  log "kcat: present ($(command -v kcat))"
else
  log "kcat: installing from Debian"
  export DEBIAN_FRONTEND=noninteractive
  if ! as_root apt-get install -y -q --no-install-recommends kcat >"$CACHE/apt-kcat.log" 2>&1; then
    as_root apt-get update -q >>"$CACHE/apt-kcat.log" 2>&1
    as_root apt-get install -y -q --no-install-recommends kcat >>"$CACHE/apt-kcat.log" 2>&1 \
      || { tail -20 "$CACHE/apt-kcat.log" >&2; exit 1; }
  fi
  command -v kcat >/dev/null
fi

# ---- Java 17+ and Maven (on the project's machine image already; Debian otherwise) ------
if ! command -v javac >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
  log "jdk/maven: installing from Debian"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -q >"$CACHE/apt-jdk.log" 2>&1
  as_root apt-get install -y -q --no-install-recommends openjdk-17-jdk-headless maven >>"$CACHE/apt-jdk.log" 2>&1 \
    || { tail -20 "$CACHE/apt-jdk.log" >&2; exit 1; }
else
  log "jdk/maven: present ($(javac -version 2>&1))"
fi

# ---- Python venv --------------------------------------------------------------------
VENV="$CACHE/venv"
PY_PINS=(
  "pytest==$PYTEST_VERSION"
  "pytest-timeout==$PYTEST_TIMEOUT_VERSION"
  "confluent-kafka==$CONFLUENT_KAFKA_VERSION"
  "kafka-python==$KAFKA_PYTHON_VERSION"
  "lz4==$LZ4_VERSION"
  "zstandard==$ZSTANDARD_VERSION"
  "python-snappy==$PYTHON_SNAPPY_VERSION"
  "cramjam==$CRAMJAM_VERSION"
  "crc32c==$CRC32C_VERSION"
)
PY_STAMP="$VENV/.rill-pins"
WANT_PINS="$(printf '%s\n' "${PY_PINS[@]}")"
if [ -x "$VENV/bin/python" ] && [ -f "$PY_STAMP" ] && [ "$(cat "$PY_STAMP")" = "$WANT_PINS" ]; then
  log "venv: present ($VENV)"
else
  log "venv: installing ${PY_PINS[*]}"
  PYTHON="${PYTHON:-python3}"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_PINS[@]}"
  "$VENV/bin/python" -c 'import pytest, pytest_timeout, confluent_kafka, kafka, lz4, zstandard, snappy, crc32c'
  printf '%s\n' "$WANT_PINS" >"$PY_STAMP"
fi

# ---- Apache Kafka jars (Maven) -------------------------------------------------------
JARS="$CACHE/kafka-jars/$KAFKA_VERSION"
POM="$ROOT/tests/java/pom.xml"
POM_SUM="$(sha256sum "$POM" | cut -d' ' -f1)"
for kind in clients server; do
  dir="$JARS/$kind"
  if [ -f "$dir/.rill-pom-sha256" ] && [ "$(cat "$dir/.rill-pom-sha256")" = "$POM_SUM" ]; then
    log "kafka jars ($kind): present ($dir)"
    continue
  fi
  command -v mvn >/dev/null || { echo "install.sh: mvn is needed for the Kafka jars" >&2; exit 1; }
  log "kafka jars ($kind): resolving org.apache.kafka $KAFKA_VERSION"
  rm -rf "$dir.tmp"
  mvn -B -Dstyle.color=never -f "$POM" -P "$kind" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DoutputDirectory="$dir.tmp" -DincludeScope=runtime \
    >"$CACHE/mvn-$kind.log" 2>&1 || { tail -40 "$CACHE/mvn-$kind.log" >&2; exit 1; }
  ls "$dir.tmp"/kafka-clients-"$KAFKA_VERSION".jar >/dev/null
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
  echo "$POM_SUM" >"$dir/.rill-pom-sha256"
done

# ---- Java test program --------------------------------------------------------------
# tests/java/src/RillJavaClient.java, compiled against kafka-clients.
JSRC="$ROOT/tests/java/src"
JOUT="$CACHE/java-classes/$KAFKA_VERSION"
SRC_SUM="$(cat "$JSRC"/*.java | sha256sum | cut -d' ' -f1)"
if [ -f "$JOUT/.rill-src-sha256" ] && [ "$(cat "$JOUT/.rill-src-sha256")" = "$SRC_SUM" ]; then
  log "java test program: present ($JOUT)"
else
  log "java test program: compiling"
  rm -rf "$JOUT"
  mkdir -p "$JOUT"
  javac --release 17 -nowarn -d "$JOUT" -cp "$JARS/clients/*" "$JSRC"/*.java
  echo "$SRC_SUM" >"$JOUT/.rill-src-sha256"
fi

# ---- Kubernetes control plane, kubectl and helm (tests/e2e/k8s) ----------------------
# Built from source through Go's module client; a no-op (well under a second) when the
# cache holds the pinned versions, about 9 minutes cold on 2 cores.
# Its output goes through as is: a cold build is long and should show progress.
bash "$ROOT/tests/tools/k8s/build.sh"

# ---- cargo-fuzz (crates.io) for the fuzz targets in fuzz/ -------------------------------
if [ -x "$CACHE/cargo-fuzz/bin/cargo-fuzz" ] && "$CACHE/cargo-fuzz/bin/cargo-fuzz" --version | grep -qF "$CARGO_FUZZ_VERSION"; then
  log "cargo-fuzz: $CARGO_FUZZ_VERSION present"
else
  log "cargo-fuzz: installing $CARGO_FUZZ_VERSION"
  cargo install --locked --quiet --root "$CACHE/cargo-fuzz" --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi
rustup run nightly rustc --version >/dev/null 2>&1 \
  || { echo "install.sh: the fuzz targets need a nightly Rust toolchain (rustup toolchain list)" >&2; exit 1; }

log "done: cache $CACHE"
