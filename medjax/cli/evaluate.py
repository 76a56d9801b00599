"""External validation of a model on a converted dataset (medjax/evals/external.py).

  # fit on 1% / 10% / 100% of covid_cxr's train patients (and zero-shot), score on a hospital's
  # own X-rays converted with medjax-prepare into another data dir:
  medjax-evaluate --config medmllm_s --workdir runs/medmllm_s \\
      --config.data.dir=$HOME/medjax_data --dataset /data/site_b/covid_cxr/2.0.0 --split all \\
      --out runs/medmllm_s/eval_site_b
  # a CheXpert observation, fitted on one converted dataset and scored on another:
  medjax-evaluate --config medmllm_s --workdir runs/medmllm_s --task pleural_effusion \\
      --fit_dataset chexpert_cxr --dataset mimic_cxr --config.data.dir=$HOME/medjax_data

--workdir is anything `weights.load_model` loads (a workdir, step directory or medjax export;
an import of other formats plugs in there); empty = a random init only. Prints the results table
(markdown); --out also writes results.json, results.md and roc.png. No image, text or patient
id is printed or written: the scored set is named by its directory, counts and a digest.
"""
from absl import flags

from medjax.cli import common
from medjax.evals import external, finetune, labelled

common.define_config_flag()
flags.DEFINE_string("workdir", "", "The model: a run (its newest checkpoint), a step directory "
                    "or an export; empty = a random init of the config.")
flags.DEFINE_string("fit_dataset", "covid_cxr", "Dataset whose train split the model is fitted "
                    "on: a TFDS name under config.data.dir or a path to a converted dataset.")
flags.DEFINE_string("dataset", None, "Dataset scored: a name under config.data.dir or a path "
                    "(a TFDS version dir, or a dataset dir: its newest version).")
flags.DEFINE_string("split", "validation", "Split(s) of --dataset scored: a name, 'a+b', or "
                    f"'{labelled.ALL_SPLITS}'.")
flags.DEFINE_enum("task", "diagnosis", labelled.TASKS, "What to predict from the X-ray.")
flags.DEFINE_list("modes", list(finetune.MODES), f"Of {finetune.MODES}.")
flags.DEFINE_list("fractions", ["0.01", "0.1", "1.0"], "Shares of the train patients labelled.")
flags.DEFINE_integer("seeds", 5, "Patient samples (and head inits) per fraction.")
flags.DEFINE_integer("steps", 100, "full mode: training steps per fraction and seed.")
flags.DEFINE_float("lr", 1e-4, "full mode: AdamW learning rate.")
flags.DEFINE_integer("batch_size", 32, "full mode: images per step.")
flags.DEFINE_bool("baseline", True, "Also fit a random init of the config: the gain over it.")
flags.DEFINE_integer("bootstrap", 2000, "Patient-bootstrap resamples of the intervals.")
flags.DEFINE_string("out", "", "Directory for results.json, results.md and roc.png.")


def main(argv):
  del argv
  config = common.config()
  f = flags.FLAGS
  summary, curves, labels = external.run(
      config, f.workdir, f.fit_dataset, f.dataset, f.split, f.task, tuple(f.modes),
      [float(x) for x in f.fractions], f.seeds, f.steps, f.lr, f.batch_size, f.baseline,
      f.bootstrap)
  if f.out:
    external.write(summary, curves, labels, f.out)
  print(external.markdown(summary))


def run():
  common.run(main, required=("config", "dataset"))


if __name__ == "__main__":
  run()
