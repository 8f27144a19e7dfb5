#!/usr/bin/env bash
# Installs kubernetes-validate (PyPI, pinned) into a virtualenv in a cache keyed by its version:
#   ${SMIDGE_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/smidge}/kubernetes-validate/<version>/bin/kubernetes-validate
# With --check it only says whether it is there (exit 3 when not). Nothing is installed when it is there. Prints its path as the last line.
set -euo pipefail

version=1.37.0

venv="${SMIDGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/smidge}/kubernetes-validate/$version"
bin="$venv/bin/kubernetes-validate"
if [[ ${1:-} == --check ]]; then
  [[ -x $bin ]] || exit 3
  echo "$bin"
  exit 0
fi
if [[ -x $bin ]]; then
  echo "kubernetes-validate: cached" >&2
  echo "$bin"
  exit 0
fi
# The script appears only once pip has installed the package, so a half-done install is redone.
python3 -m venv --clear "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$version" >&2
"$bin" --version >&2
echo "$bin"
