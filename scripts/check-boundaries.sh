#!/usr/bin/env bash
# The crate boundaries of issue 7 that Cargo alone does not enforce, checked on the resolved dependency graph:
# - hpcc-core (the pure state machine) links no Kubernetes client or runtime, no async runtime and no HTTP stack;
# - hpcc-azure links no Kubernetes crate; hpcc-sim links no other project crate;
# - the operator built without the `simulator` feature (what the Dockerfile builds) carries none of the crates only
#   the simulator uses.
# Import circles between modules are checked by the `module_graph` test (tests/module_graph.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0

# $1: a package (and flags), $2..: crate names that must not appear among its normal (non-dev) dependencies.
forbid() {
  local what=$1
  shift
  local tree
  # shellcheck disable=SC2086 # $what is a package name plus flags
  tree=$(cargo tree -e normal --prefix none --format '{p}' $what | awk '{print $1}' | sort -u)
  for crate in "$@"; do
    if grep -qx "$crate" <<<"$tree"; then
      echo "boundaries: \`cargo tree -e normal $what\` contains $crate" >&2
      fail=1
    fi
  done
}

# Member crates with every feature on: no feature may bring a forbidden crate in.
forbid "-p hpcc-core --all-features" kube-client kube-runtime tokio hyper reqwest axum hpcc-azure hpcc-sim
forbid "-p hpcc-api --all-features" kube-client kube-runtime tokio hyper reqwest axum
forbid "-p hpcc-azure --all-features" kube kube-core kube-client kube-runtime k8s-openapi hpcc-api hpcc-core hpcc-sim axum
# (Its tests use hpcc-test-support, a dev-dependency that links hpcc-sim itself; the simulator's code does not.)
forbid "-p hpcc-sim --all-features" hpcc-api hpcc-core hpcc-azure hpc-cache-operator hpcc-test-support
forbid "-p hpc-cache-operator --no-default-features" hpcc-sim axum axum-server rcgen jsonwebtoken

[ $fail -eq 0 ] && echo "boundaries: ok" >&2
exit $fail
