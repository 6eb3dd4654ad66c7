#!/usr/bin/env bash
# Builds the Kubernetes control plane used by Rill's operator tests from source,
# through Go's module client, into a cache that later runs reuse:
#
#   ${RILL_CACHE:-$HOME/.cache/rill}/k8s/<K8S_VERSION>/bin/
#     kube-apiserver kube-controller-manager kube-scheduler kubectl etcd helm
#
# Versions are pinned in versions.env beside this script. A binary that is
# already in the cache and reports the pinned version is not rebuilt, so the
# script is cheap to call before every test run.
#
# Usage: build.sh [--print-bin] [component ...]
#   --print-bin   only print the bin directory (for the test harness) and exit
#   component     any of: kube-apiserver kube-controller-manager kube-scheduler
#                 kubectl etcd helm (default: all of them)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

CACHE_DIR="${RILL_CACHE:-$HOME/.cache/rill}/k8s/${K8S_VERSION}"
BIN="$CACHE_DIR/bin"
# Generated go.mod files live here, not in the repo: they are derived from the
# pinned versions and nothing else.
WORK="$CACHE_DIR/src"

ALL=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd helm)
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
K8S_LDFLAGS=""  # computed once, on the first kubernetes build

die() {
  echo "k8s/build.sh: error: $*" >&2
  exit 1
}
log() { echo "k8s/build.sh: $*"; }

if [[ "${1-}" == "--print-bin" ]]; then
  echo "$BIN"
  exit 0
fi

wanted=("$@")
if [[ ${#wanted[@]} -eq 0 ]]; then
  wanted=("${ALL[@]}")
fi
for c in "${wanted[@]}"; do
  case " ${ALL[*]} " in
    *" $c "*) ;;
    *) die "unknown component '$c' (known: ${ALL[*]})" ;;
  esac
done

command -v go >/dev/null 2>&1 || die "go is not on PATH; install Go first"
# Never let go fetch another toolchain: if the installed Go is too old for a
# pinned release we want a clear error, not a silent download.
export GOTOOLCHAIN=local
# Static, self-contained binaries: no C toolchain needed, and they run anywhere.
export CGO_ENABLED=0

mkdir -p "$BIN" "$WORK"

# Serialise concurrent callers (e.g. several test binaries starting at once):
# only one builds, the others wait and then find the binaries ready.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE_DIR/.lock"
  flock -w 5400 9 || die "timed out waiting for another build.sh holding $CACHE_DIR/.lock"
fi

# --- helpers ---------------------------------------------------------------

# The version string each binary must print, and how to ask it.
version_cmd() {
  case "$1" in
    kube-apiserver | kube-controller-manager | kube-scheduler) echo "--version" ;;
    kubectl) echo "version --client" ;;
    etcd) echo "--version" ;;
    helm) echo "version --short" ;;
  esac
}
expected_version() {
  case "$1" in
    kube-*) echo "Kubernetes ${K8S_VERSION}" ;;
    kubectl) echo "Client Version: ${K8S_VERSION}" ;;
    etcd) echo "etcd Version: ${ETCD_VERSION#v}" ;;
    helm) echo "${HELM_VERSION}" ;;
  esac
}

# True when $BIN/<name> exists and reports the pinned version.
is_built() {
  local name="$1" out
  [[ -x "$BIN/$name" ]] || return 1
  # shellcheck disable=SC2046  # version_cmd is deliberately word-split
  out="$(timeout 30 "$BIN/$name" $(version_cmd "$name") 2>&1)" || return 1
  [[ "$out" == *"$(expected_version "$name")"* ]]
}

# Path of the go.mod of module@version in Go's module cache (downloads it).
gomod_of() {
  local mv="$1" json
  # -json reports a failure (e.g. an unknown version) in its "Error" field.
  json="$(timeout 600 go mod download -json "$mv")" ||
    die "go mod download $mv failed: $(sed -n 's/^[[:space:]]*"Error": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")"
  sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$json"
}

# Fail clearly when the installed Go is older than a module's `go` directive.
require_go() {
  local mv="$1" gomod="$2" need have
  need="$(awk '$1 == "go" { print $2; exit }' "$gomod")"
  have="$(go env GOVERSION)"
  have="${have#go}"
  [[ -n "$need" ]] || return 0
  if [[ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" != "$need" ]]; then
    die "$mv needs Go >= $need but the installed Go is $have; install a newer Go or pin an older release in versions.env"
  fi
}

timings=()
# build_one NAME CMD...: runs CMD (which writes "$tmp_out"), checks the result
# reports the pinned version, then moves it into $BIN atomically so an
# interrupted build never leaves a half-written binary behind.
build_one() {
  local name="$1"
  shift
  local start=$SECONDS
  tmp_out="$BIN/.$name.tmp.$$"
  log "building $name ($(expected_version "$name"))"
  if ! "$@"; then
    rm -f "$tmp_out"
    die "building $name failed (see the go output above)"
  fi
  mv -f "$tmp_out" "$BIN/$name"
  is_built "$name" || die "$BIN/$name was built but does not report '$(expected_version "$name")'"
  timings+=("$name: $((SECONDS - start))s")
  log "built $name in $((SECONDS - start))s"
}

# --- kubernetes ------------------------------------------------------------

K8S_MOD="$WORK/kubernetes"

# Writes $K8S_MOD/go.mod: requires k8s.io/kubernetes at the pin and replaces
# every staging module (k8s.io/api, k8s.io/client-go, ...) with its published
# v0.Y.Z tag. The list of staging modules is read from kubernetes' own go.mod
# (its `=> ./staging/src/...` replaces), so a new release needs no edits here.
prepare_k8s_module() {
  local stamp="$K8S_MOD/.prepared-$K8S_VERSION"
  [[ -f "$stamp" && -f "$K8S_MOD/go.mod" ]] && return 0
  local upstream staging_version mods
  upstream="$(gomod_of "k8s.io/kubernetes@$K8S_VERSION")"
  [[ -f "$upstream" ]] || die "could not locate go.mod of k8s.io/kubernetes@$K8S_VERSION"
  require_go "k8s.io/kubernetes@$K8S_VERSION" "$upstream"
  # v1.Y.Z -> v0.Y.Z: the staging modules are tagged in lockstep.
  staging_version="v0.${K8S_VERSION#v1.}"
  mods="$(awk '$2 == "=>" && $3 ~ /^\.\/staging\/src\// { print $1 }' "$upstream" | sort -u)"
  [[ -n "$mods" ]] || die "found no staging replaces in $upstream"
  log "kubernetes $K8S_VERSION: $(wc -l <<<"$mods") staging modules at $staging_version"

  rm -rf "$K8S_MOD"
  mkdir -p "$K8S_MOD"
  {
    echo "// Generated by tests/tools/k8s/build.sh; do not edit."
    echo "module rill-k8s-tools/kubernetes"
    echo
    awk '$1 == "go" { print; exit }' "$upstream"
    echo
    # Keep the GODEBUG defaults upstream builds its binaries with.
    grep -E '^godebug ' "$upstream" || true
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    while read -r m; do
      echo "	$m => $m $staging_version"
    done <<<"$mods"
    echo ")"
  } >"$K8S_MOD/go.mod"

  # Resolve the whole import graph of the commands once, filling go.sum.
  local pkgs=()
  for c in "${K8S_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c@$K8S_VERSION"); done
  (cd "$K8S_MOD" && timeout 1800 go get "${pkgs[@]}") || die "go get of the kubernetes commands failed"
  touch "$stamp"
}

# The same -X flags kubernetes' hack/lib/version.sh sets, so --version and
# `kubectl version` print the release. buildDate is the release's publish time
# (from the module proxy's .info) so rebuilds are reproducible.
k8s_ldflags() {
  local info_json date minor
  info_json="$(timeout 600 go mod download -json "k8s.io/kubernetes@$K8S_VERSION")"
  date="$(sed -n 's/^[[:space:]]*"Time": "\(.*\)",\{0,1\}$/\1/p' <<<"$info_json" | head -n1)"
  date="${date:-1970-01-01T00:00:00Z}"
  minor="${K8S_VERSION#v1.}"
  minor="${minor%%.*}"
  local flags="-s -w" pkg
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.buildDate=$date"
  done
  echo "$flags"
}

build_k8s_cmd() {
  local name="$1"
  (cd "$K8S_MOD" && timeout 3000 go build -trimpath -ldflags "$K8S_LDFLAGS" -o "$tmp_out" "k8s.io/kubernetes/cmd/$name")
}

# --- etcd ------------------------------------------------------------------

ETCD_MOD="$WORK/etcd"

prepare_etcd_module() {
  local stamp="$ETCD_MOD/.prepared-$ETCD_VERSION"
  [[ -f "$stamp" && -f "$ETCD_MOD/go.mod" ]] && return 0
  local upstream
  upstream="$(gomod_of "go.etcd.io/etcd/server/v3@$ETCD_VERSION")"
  [[ -f "$upstream" ]] || die "could not locate go.mod of go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  require_go "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "$upstream"
  rm -rf "$ETCD_MOD"
  mkdir -p "$ETCD_MOD"
  {
    echo "// Generated by tests/tools/k8s/build.sh; do not edit."
    echo "module rill-k8s-tools/etcd"
    echo
    awk '$1 == "go" { print; exit }' "$upstream"
  } >"$ETCD_MOD/go.mod"
  # etcd's own replaces (../api, ...) only apply inside its repo; from here its
  # requires pin the sibling modules at the same release.
  (cd "$ETCD_MOD" && timeout 1800 go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION") ||
    die "go get go.etcd.io/etcd/server/v3@$ETCD_VERSION failed"
  touch "$stamp"
}

build_etcd() {
  # The module root of go.etcd.io/etcd/server/v3 is etcd's `main` package.
  (cd "$ETCD_MOD" && timeout 3000 go build -trimpath -ldflags "-s -w" -o "$tmp_out" go.etcd.io/etcd/server/v3)
}

# --- helm ------------------------------------------------------------------

build_helm() {
  local gobin="$WORK/helm-gobin"
  rm -rf "$gobin"
  mkdir -p "$gobin"
  local upstream
  upstream="$(gomod_of "helm.sh/helm/v3@$HELM_VERSION")"
  require_go "helm.sh/helm/v3@$HELM_VERSION" "$upstream"
  # `go install pkg@version` builds helm with exactly its own go.mod. Helm's
  # default version string is only "v3.Y"; set the full pin as its release
  # Makefile does.
  GOBIN="$gobin" timeout 3000 go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" || return 1
  mv -f "$gobin/helm" "$tmp_out"
}

# --- main ------------------------------------------------------------------

log "cache: $BIN"
log "go: $(go env GOVERSION)"
total_start=$SECONDS
for name in "${wanted[@]}"; do
  if is_built "$name"; then
    log "$name is up to date ($(expected_version "$name"))"
    continue
  fi
  case "$name" in
    kube-*|kubectl)
      prepare_k8s_module
      [[ -n "$K8S_LDFLAGS" ]] || K8S_LDFLAGS="$(k8s_ldflags)"
      build_one "$name" build_k8s_cmd "$name"
      ;;
    etcd)
      prepare_etcd_module
      build_one etcd build_etcd
      ;;
    helm)
      build_one helm build_helm
      ;;
  esac
done

if [[ ${#timings[@]} -gt 0 ]]; then
  log "built: ${timings[*]} (total $((SECONDS - total_start))s)"
fi
log "all of [${wanted[*]}] ready in $BIN"
