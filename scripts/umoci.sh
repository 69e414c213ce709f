#!/usr/bin/env bash
# Builds umoci (the Open Containers tool that edits OCI image layouts on disk, no container engine or registry) from
# its official source through the Go module proxy, pinned in versions.env, and caches it beside the test control
# plane's binaries (same cache root as test-deps.sh), keyed by version. A second run is a no-op. Prints the binary's
# path on stdout. `scripts/image.sh` (`make image`) assembles the operator image with it.
#
#   scripts/umoci.sh                      # build if missing, print the path
#   "$(scripts/umoci.sh)" --version
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache_root=${HPCC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hpc-cache-operator}
bin="$cache_root/umoci-$UMOCI_VERSION/bin"
umoci="$bin/umoci"
mkdir -p "$bin"

build() {
  [ -x "$umoci" ] && return 0
  echo "umoci: building umoci from github.com/opencontainers/umoci $UMOCI_VERSION (first time only)" >&2
  # umoci's go.mod has a replace directive, so `go install module@version` refuses it: build inside the downloaded
  # (read-only) module instead, where its go.mod and go.sum are the main module's, as its own Makefile does.
  # The version comes from the module's embedded VERSION file.
  local dir
  dir=$(go mod download -json "github.com/opencontainers/umoci@$UMOCI_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  (cd "$dir" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "-s -w" -o "$umoci.tmp" ./cmd/umoci >&2)
  mv "$umoci.tmp" "$umoci"
}

# One build at a time per cache (parallel runners, two shells): the second waits, then finds it built.
if [ ! -x "$umoci" ]; then
  exec 9>"$cache_root/.umoci.lock"
  flock 9
  build
fi
echo "$umoci"
