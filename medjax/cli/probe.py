"""Linear probe on frozen image embeddings: pretrained vs random (medjax/evals/linear_probe.py).

  medjax-probe --config medmllm_s --workdir runs/medmllm_s \
      --config.data.dir=$HOME/medjax_data
  # several pretraining seeds of one recipe: repeat --workdir
  medjax-probe --config medmllm_s --workdir runs/s0 --workdir runs/s1 ...

Prints JSON: AUROC mean and spread over 25 patient-grouped folds for the mean of the pretrained
runs (each run's AUROC too), the mean of --random_inits random towers (each seed's AUROC too)
and two floors without a network (pooled pixels; each image's brightness and contrast). Then the
gain of pretrained over random: per fold (mean, spread, folds where it is better), on the
out-of-fold predictions with a 95% patient-bootstrap interval, and `runs_vs_inits`, an exact
permutation test with each run and each init as one unit (its p-value cannot go below
1 / C(runs + inits, runs): one run needs more seeds to say much). `unseen` repeats the last two
on the validation split's images alone, which pretraining never read.
"""
import json

from absl import flags

from medjax.cli import common
from medjax.evals import linear_probe

common.define_config_flag()
flags.DEFINE_multi_string("workdir", None, "A pretraining run to probe (its newest "
                          "checkpoint), a step directory or an export; repeat for several seeds "
                          "of one recipe.")
flags.DEFINE_string("dataset", "covid_cxr", "TFDS dataset under config.data.dir with the labels.")
flags.DEFINE_integer("random_inits", 8, "Random towers (seeds 0, 1, ...): their mean = baseline.")


def main(argv):
  del argv
  config = common.config()
  f = flags.FLAGS
  print(json.dumps(linear_probe.run(config, f.workdir, f.dataset, f.random_inits), indent=2))


def run():
  common.run(main, required=("config", "workdir"))


if __name__ == "__main__":
  run()
