"""Linear probe on frozen image embeddings, pretrained vs random init (medjax/evals/linear_probe.py).

  python launch/probe.py --config configs/medmllm_s.py --workdir runs/medmllm_s \
      --config.data.dir=$HOME/medjax_data

Prints JSON: AUROC mean and spread over 25 patient-grouped folds for each init, and the
per-fold gain of pretrained over random (mean, spread, folds where it is better).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from medjax.evals import linear_probe  # noqa: E402

config_flags.DEFINE_config_file("config", None, "configs/<name>.py[:arg]", lock_config=True)
flags.DEFINE_string("workdir", None, "The pretraining run to probe (its newest checkpoint).")
flags.DEFINE_string("dataset", "covid_cxr", "TFDS dataset under config.data.dir with the labels.")


def main(argv):
  del argv
  f = flags.FLAGS
  print(json.dumps(linear_probe.run(f.config, f.workdir, f.dataset), indent=2))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
