# Sourced by launch/demo.sh and .ci/run: creates ./.venv from requirements.txt once, then
# reuses it (reinstalling only when requirements.txt changed).
set -euo pipefail
PY=$(command -v python3.11 || command -v python3)
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
if ! cmp -s requirements.txt .venv/requirements.installed; then
  .venv/bin/pip install -q -r requirements.txt
  cp requirements.txt .venv/requirements.installed
fi
export PATH="$PWD/.venv/bin:$PATH"
