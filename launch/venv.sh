# shellcheck shell=bash
# Sourced by launch/demo.sh and .ci/run: creates ./.venv with medjax installed (editable) and
# the extras in MEDJAX_EXTRAS (default: dev) once, then reuses it, reinstalling only when
# pyproject.toml or the extras changed. CI adds the hf extra (torch, transformers) for the
# Hugging Face tests; the training install never needs it.
set -euo pipefail
PY=$(command -v python3.11 || command -v python3)
EXTRAS=${MEDJAX_EXTRAS:-dev}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
if ! { cmp -s pyproject.toml .venv/pyproject.installed && \
       [ "$(cat .venv/extras.installed 2>/dev/null)" = "$EXTRAS" ]; }; then
  .venv/bin/pip install -q -e ".[$EXTRAS]"
  cp pyproject.toml .venv/pyproject.installed
  echo "$EXTRAS" > .venv/extras.installed
fi
export PATH="$PWD/.venv/bin:$PATH"
