#!/usr/bin/env bash
# A local control plane for development, kept running in the background under .dev/cluster (gitignored).
#
#   scripts/dev-cluster.sh up     # start (or find running); prints `export KUBECONFIG=...` and `export PATH=...`
#   eval "$(scripts/dev-cluster.sh up)"   # ...and use it in this shell
#   scripts/dev-cluster.sh down   # stop it and delete its data
#
# Same flags as the test harness: both go through scripts/control-plane.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${HPCC_DEV_CLUSTER_DIR:-$here/../.dev/cluster}

case ${1:-} in
  up)
    kubeconfig=$("$here/control-plane.sh" start "$dir")
    # shellcheck disable=SC1091
    server=$(. "$(dirname "$kubeconfig")/env" && echo "$SERVER")
    echo "control plane at $server (logs: $(dirname "$kubeconfig")/*.log); stop it with: make dev-cluster-down" >&2
    echo "export KUBECONFIG=$kubeconfig"
    # kubectl and helm of the pinned versions, first on PATH
    echo "export PATH=${HPCC_TEST_BIN_DIR:-$("$here/test-deps.sh")}:\$PATH"
    ;;
  down)
    if [ -d "$dir" ]; then
      "$here/control-plane.sh" stop "$dir"
      rm -rf "$dir"
    fi
    echo "dev cluster stopped" >&2
    ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
