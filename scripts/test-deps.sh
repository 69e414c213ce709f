#!/usr/bin/env bash
# Builds kube-apiserver, kubectl, etcd and helm from their official sources through the Go module proxy and caches
# them outside the repository, keyed by version. A second run is a no-op. Prints the bin directory on stdout.
#
#   scripts/test-deps.sh            # build what is missing
#   KUBEBUILDER_ASSETS=/path ...    # use existing envtest binaries for kube-apiserver/etcd(/kubectl) instead
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache_root=${HPCC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hpc-cache-operator}
bin="$cache_root/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION/bin"
work="$cache_root/build"
mkdir -p "$bin" "$work"

log() { echo "test-deps: $*" >&2; }


minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
staging_version="v0.${K8S_VERSION#v1.}"

# A wrapper main module that requires k8s.io/kubernetes and pins every staging module to its published version.
build_k8s() { # name import-path-of-cmd-app
  local name=$1 dir="$work/$1-$K8S_VERSION"
  [ -x "$bin/$name" ] && return 0
  log "building $name $K8S_VERSION (first time only; several minutes)"
  mkdir -p "$dir"
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module hpcc.local/$name"
    grep -E '^go [0-9]' "$gomod"
    grep -E '^godebug ' "$gomod" || true
    echo "require k8s.io/kubernetes $K8S_VERSION"
    # every staging module upstream replaces with ./staging/src/... gets its published v0.X.Y instead
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#replace \1 => \1 '"$staging_version"'#p' "$gomod"
  } > "$dir/go.mod"
  cat > "$dir/main.go" <<GO
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"$2"
)

func main() { os.Exit(cli.Run($3)) }
GO
  (cd "$dir" && GOFLAGS=-mod=mod go mod tidy >&2 && \
    CGO_ENABLED=0 go build -trimpath -o "$bin/$name.tmp" -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 \
      -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean \
      -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 \
      -X k8s.io/client-go/pkg/version.gitMinor=$minor" . >&2)
  mv "$bin/$name.tmp" "$bin/$name"
}

build_etcd() {
  local dir="$work/etcd-$ETCD_VERSION"
  [ -x "$bin/etcd" ] && return 0
  log "building etcd $ETCD_VERSION"
  mkdir -p "$dir"
  printf 'module hpcc.local/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > "$dir/go.mod"
  cat > "$dir/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$dir" && GOFLAGS=-mod=mod go mod tidy >&2 && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" . >&2)
  mv "$bin/etcd.tmp" "$bin/etcd"
}

build_helm() {
  [ -x "$bin/helm" ] && return 0
  log "building helm $HELM_VERSION"
  # Like helm's Makefile: the Kubernetes version helm assumes offline (`helm template`, lint deprecations) is the one
  # of the client-go it is built with; without it helm says v1.20.
  local gomod kv
  gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  kv=$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$gomod")
  local k8s_flags=""
  for pkg in pkg/lint/rules pkg/chartutil; do
    k8s_flags="$k8s_flags -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$kv"
  done
  GOBIN="$work/helm-$HELM_VERSION" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w \
    -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION $k8s_flags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
  mv "$work/helm-$HELM_VERSION/helm" "$bin/helm"
}

# Envtest binaries, when supplied, win over our builds: they go into a directory of their own (keyed by the
# assets path) so the version-keyed cache always holds what this script built.
assets() { [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/$1" ]; }

# One build at a time per cache (parallel test runners, two shells): the second waits, then finds everything built.
exec 9>"$cache_root/.build.lock"
flock 9

assets etcd || build_etcd
assets kube-apiserver || build_k8s kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver/app 'app.NewAPIServerCommand()'
assets kubectl || build_k8s kubectl k8s.io/kubectl/pkg/cmd 'cmd.NewDefaultKubectlCommand()'
build_helm

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  mixed="$cache_root/assets-$(printf %s "$KUBEBUILDER_ASSETS" | cksum | cut -d' ' -f1)/bin"
  mkdir -p "$mixed"
  for b in etcd kube-apiserver kubectl helm; do
    if assets "$b"; then ln -sfn "$KUBEBUILDER_ASSETS/$b" "$mixed/$b"; else ln -sfn "$bin/$b" "$mixed/$b"; fi
  done
  bin=$mixed
fi
echo "$bin"
