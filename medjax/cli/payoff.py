"""Does pretraining pay off on your data? Pretraining runs against random towers, on the probe and
on few-label linear fine-tuning, with the verdict (medjax/evals/payoff.py).

  # three pretraining seeds of one recipe, then the comparison:
  for s in 0 1 2; do medjax-train --config medmllm_s --workdir runs/s$s --config.seed=$s \\
      --config.data.dir=$HOME/medjax_data; done
  medjax-payoff --config medmllm_s --workdir runs/s0 --workdir runs/s1 --workdir runs/s2 \\
      --config.data.dir=$HOME/medjax_data --out runs/payoff.json

Prints a markdown table (the probe's gain with its 95% patient-bootstrap interval, each label
fraction's runs-vs-random means, permutation p-values with each run and each init as one unit)
and the verdict; --out also writes every figure as JSON. The random towers are seeds 0, 1, ...
of the config. No image, text or patient id is printed or written.
"""
import json

from absl import flags

from medjax import paths
from medjax.cli import common
from medjax.evals import payoff

common.define_config_flag()
flags.DEFINE_multi_string("workdir", None, "A pretraining run (its newest checkpoint), a step "
                          "directory or an export; repeat for each seed of the recipe.")
flags.DEFINE_string("dataset", "covid_cxr", "TFDS dataset under config.data.dir with the "
                    "diagnosis labels and a validation split.")
flags.DEFINE_integer("random_inits", 8, "Random towers (seeds 0, 1, ...): the baseline.")
flags.DEFINE_list("fractions", ["0.01", "0.1", "1.0"], "Shares of the train patients labelled.")
flags.DEFINE_integer("seeds", 5, "Label samples (and head inits) per fraction and tower.")
flags.DEFINE_float("alpha", 0.05, "The probe's permutation p-value must be below this.")
flags.DEFINE_string("out", "", "JSON file for every figure.")


def main(argv):
  del argv
  config = common.config()
  f = flags.FLAGS
  result = payoff.run(config, f.workdir, f.dataset, f.random_inits,
                      [float(x) for x in f.fractions], f.seeds, f.alpha)
  if f.out:
    paths.path(f.out).write_text(json.dumps(result, indent=2))
  print(payoff.markdown(result))


def run():
  common.run(main, required=("config", "workdir"))


if __name__ == "__main__":
  run()
