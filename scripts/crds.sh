#!/usr/bin/env bash
# Generates the CRDs from the Rust types (`hpc-cache-operator crd`) into their two committed homes:
#   crds/hpccache.yaml                                    plain YAML, for `kubectl apply -f crds/`
#   charts/hpc-cache-operator/templates/crds.yaml         the same, rendered by Helm when crds.enabled, kept on
#                                                         uninstall when crds.keep (cert-manager's way: CRDs as
#                                                         templates are installed from git and upgraded with the
#                                                         release, which a chart's crds/ directory never is)
#   scripts/crds.sh          write both
#   scripts/crds.sh --check  fail when either is stale (make crd-check)
set -euo pipefail
cd "$(dirname "$0")/.."
plain=$(mktemp)
templ=$(mktemp)
trap 'rm -f "$plain" "$templ"' EXIT

cargo run --quiet --bin hpc-cache-operator -- crd >"$plain"
{
  echo '{{- if .Values.crds.enabled }}'
  # Every CRD gets the chart's labels and, when crds.keep, Helm's keep policy.
  awk '
    /^metadata:$/ {
      print
      print "  {{- if .Values.crds.keep }}"
      print "  annotations:"
      print "    helm.sh/resource-policy: keep"
      print "  {{- end }}"
      print "  labels:"
      print "    {{- include \"hpcc.labels\" . | nindent 4 }}"
      next
    }
    { print }
  ' "$plain"
  echo '{{- end }}'
} >"$templ"

targets=("crds/hpccache.yaml:$plain" "charts/hpc-cache-operator/templates/crds.yaml:$templ")
if [ "${1:-}" = --check ]; then
  stale=0
  for t in "${targets[@]}"; do
    file=${t%%:*}
    if ! diff -u "$file" "${t#*:}" >&2; then
      echo "crd-check: $file is stale; run \`make crds\` and commit it" >&2
      stale=1
    fi
  done
  [ $stale -eq 0 ] && echo "crd-check: crds/ and the chart's CRD template are current" >&2
  exit $stale
fi
for t in "${targets[@]}"; do
  cp "${t#*:}" "${t%%:*}"
done
echo "crds: wrote ${targets[*]%%:*}" >&2
