#!/usr/bin/env bash
# A small offline stand-in for hadolint: the properties this project's Dockerfile must keep.
set -euo pipefail
file=${1:-Dockerfile}
fail=0
check() { # description, extended regex that must match
  grep -Eq "$2" "$file" || { echo "lint-docker: $file: $1" >&2; fail=1; }
}
reject() { # description, extended regex that must not match
  ! grep -Eqn "$2" "$file" || { echo "lint-docker: $file: $1: $(grep -En "$2" "$file" | head -1)" >&2; fail=1; }
}
check "needs a builder stage" '^FROM .+ AS builder$'
check "must run as a non-root user" '^USER [1-9][0-9]*(:[0-9]+)?$'
check "ENTRYPOINT must be exec form running the operator" '^ENTRYPOINT \["/hpc-cache-operator", *"run"\]$'
check "cargo build must be --locked" 'cargo build .*--locked'
check "the image is built without the simulator feature" 'cargo build .*--no-default-features'
reject "base images need an explicit tag" '^FROM [^:@ ]+( AS .*)?$'
reject "no :latest base images" '^FROM [^ ]+:latest'
reject "use COPY, not ADD" '^ADD '
reject "no root user" '^USER (root|0)(:|$)'
[ $fail -eq 0 ] && echo "lint-docker: $file ok" >&2
exit $fail
