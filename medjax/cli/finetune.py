"""Few-label fine-tuning of the image tower (medjax/evals/finetune.py).

  # COVID-19 diagnosis with 1%, 10% and 100% of the train patients, 5 seeds each, frozen tower:
  medjax-finetune --config medmllm_s --workdir runs/medmllm_s \
      --config.data.dir=$HOME/medjax_data
  # the same from a random init (the baseline), or fine-tuning the whole tower for survival:
  medjax-finetune --config medmllm_s --config.data.dir=$HOME/medjax_data
  medjax-finetune --config medmllm_s --workdir runs/medmllm_s \
      --task survival --mode full --steps 100 --config.data.dir=$HOME/medjax_data
  # no label at all: the X-rays against the config's text prompts (config.prompts):
  medjax-finetune --config medmllm_s --workdir runs/medmllm_s --mode zero_shot

Prints JSON: per label fraction, the validation AUROC of each seed, their mean, spread and
95% patient-bootstrap interval, and how many patients and images each seed trained on
(zero_shot: one "fraction" 0). Tasks: diagnosis (covid19 vs other_pneumonia), the outcomes
survival, intubated, went_icu, needed_supplemental_O2, and the CheXpert observations.
medjax-evaluate scores another dataset.
"""
import json

from absl import flags

from medjax.cli import common
from medjax.evals import finetune, labelled

common.define_config_flag()
flags.DEFINE_string("workdir", "", "A pretraining run (its newest checkpoint), a step "
                    "directory or an export; empty = a random init of the config (the baseline).")
flags.DEFINE_enum("task", "diagnosis", labelled.TASKS, "What to predict from the X-ray.")
flags.DEFINE_list("fractions", ["0.01", "0.1", "1.0"], "Shares of the train patients labelled.")
flags.DEFINE_integer("seeds", 5, "Patient samples (and head inits) per fraction.")
flags.DEFINE_enum("mode", "linear", finetune.MODES, "zero_shot: text prompts, no label; linear: "
                  "frozen tower; full: tower trained.")
flags.DEFINE_string("dataset", "covid_cxr", "Dataset with the labels: a TFDS name under "
                    "config.data.dir or a path to a converted dataset.")
flags.DEFINE_integer("steps", 100, "full mode: training steps per fraction and seed.")
flags.DEFINE_float("lr", 1e-4, "full mode: AdamW learning rate.")
flags.DEFINE_integer("batch_size", 32, "full mode: images per step.")


def main(argv):
  del argv
  config = common.config()
  f = flags.FLAGS
  result = finetune.run(config, f.workdir, f.task, [float(x) for x in f.fractions], f.seeds,
                        f.mode, f.dataset, f.steps, f.lr, f.batch_size)
  print(json.dumps(result, indent=2))


def run():
  common.run(main, required=("config",))


if __name__ == "__main__":
  run()
