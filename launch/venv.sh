# shellcheck shell=bash
# Sourced by launch/demo.sh and .ci/run: creates ./.venv with medjax installed (editable, with
# the dev extra) once, then reuses it, reinstalling only when pyproject.toml changed.
set -euo pipefail
PY=$(command -v python3.11 || command -v python3)
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
if ! cmp -s pyproject.toml .venv/pyproject.installed; then
  .venv/bin/pip install -q -e ".[dev]"
  cp pyproject.toml .venv/pyproject.installed
fi
export PATH="$PWD/.venv/bin:$PATH"
