#!/usr/bin/env bash
# The main job end to end on a fresh machine: environment, real data, pretraining, metrics,
# export, and a summary of the run.
#   bash launch/demo.sh [extra --config.* overrides for medjax-train and medjax-export]
# Data comes from ../shared/data (or MEDJAX_SHARED_DATA) and the IU reports inside the PyPI wheel
# torchxrayvision==1.5.7 (downloaded, not installed); records go to MEDJAX_DATA_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/venv.sh
source launch/cpu_env.sh
SHARED=${MEDJAX_SHARED_DATA:-../shared/data}
DATA=${MEDJAX_DATA_DIR:-$HOME/medjax_data}
WORKDIR=${MEDJAX_WORKDIR:-runs/medmllm_s}
WHEELS=${MEDJAX_WHEEL_CACHE:-$HOME/.cache/medjax/wheels}
IU_WHEEL="$WHEELS/torchxrayvision-1.5.7-py3-none-any.whl"

[ -f "$IU_WHEEL" ] || python -m pip download -q --no-deps torchxrayvision==1.5.7 -d "$WHEELS"
medjax-prepare covid_cxr --src "$SHARED/covid-chestxray" --out "$DATA"
medjax-prepare iu_xray --src "$IU_WHEEL" --out "$DATA"
medjax-prepare ncbi_disease --src "$SHARED/text/ncbi_disease" --out "$DATA"
medjax-prepare tokenizer --data_dir "$DATA" --name covid_cxr --name iu_xray --name ncbi_disease
medjax-train --config medmllm_s --workdir "$WORKDIR" --config.data.dir="$DATA" "$@"
medjax-export --config medmllm_s --workdir "$WORKDIR" --out "$WORKDIR/export" \
  --config.data.dir="$DATA" "$@"
