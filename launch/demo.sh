#!/usr/bin/env bash
# The main job end to end on a fresh machine: environment, real data, pretraining, metrics.
#   bash launch/demo.sh [extra --config.* overrides for train.py]
# Data comes from ../shared/data (or MEDJAX_SHARED_DATA); records go to MEDJAX_DATA_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/venv.sh
SHARED=${MEDJAX_SHARED_DATA:-../shared/data}
DATA=${MEDJAX_DATA_DIR:-$HOME/medjax_data}
WORKDIR=${MEDJAX_WORKDIR:-runs/medmllm_s}
python data_prep/covid_cxr.py --src "$SHARED/covid-chestxray" --out "$DATA"
python data_prep/tokenizer.py --data_dir "$DATA"
python launch/train.py --config configs/medmllm_s.py --workdir "$WORKDIR" \
  --config.data.dir="$DATA" "$@"
echo "Metrics: $WORKDIR/metrics.jsonl; TensorBoard: tensorboard --logdir $WORKDIR/tensorboard"
