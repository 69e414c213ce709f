#!/usr/bin/env bash
# Builds promtool (Prometheus' rule checker and rule unit-test runner) from its official source through the Go module
# proxy, pinned in versions.env, and caches it beside the test control plane's binaries (same cache root as
# test-deps.sh), keyed by version. A second run is a no-op. Prints the binary's path on stdout.
#
#   scripts/promtool.sh                                   # build if missing, print the path
#   "$(scripts/promtool.sh)" test rules tests/alerts/*.yaml
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache_root=${HPCC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hpc-cache-operator}
bin="$cache_root/prometheus-$PROMETHEUS_VERSION/bin"
promtool="$bin/promtool"
mkdir -p "$bin"

build() {
  [ -x "$promtool" ] && return 0
  echo "promtool: building promtool from github.com/prometheus/prometheus $PROMETHEUS_VERSION (first time only)" >&2
  # The Go module v0.3XX.Y is Prometheus 3.XX.Y; its VERSION file says which, for `promtool --version`.
  local dir release
  dir=$(go mod download -json "github.com/prometheus/prometheus@$PROMETHEUS_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  release=$(cat "$dir/VERSION")
  local gobin="$bin/.gobin"
  rm -rf "$gobin"
  # As Prometheus' own release build (.promu.yml): netgo, static, the version stamped in.
  GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath -tags netgo -ldflags "-s -w \
    -X github.com/prometheus/common/version.Version=$release \
    -X github.com/prometheus/common/version.Revision=$PROMETHEUS_VERSION \
    -X github.com/prometheus/common/version.Branch=HEAD" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" >&2
  mv "$gobin/promtool" "$promtool"
  rm -rf "$gobin"
}

# One build at a time per cache (parallel runners, two shells): the second waits, then finds it built.
if [ ! -x "$promtool" ]; then
  exec 9>"$cache_root/.promtool.lock"
  flock 9
  build
fi
echo "$promtool"
