"""Report generation from X-rays, scored (medjax/evals/report_generation.py).

  medjax-generate --config medmllm_s --workdir runs/medmllm_s \
      --config.data.dir=$HOME/medjax_data

Prints JSON: BLEU-1..4 and ROUGE-L of the greedy reports on the validation split, and of the
nearest-train-report baseline. No report text is printed: `--out file.jsonl` writes the
generated and reference texts (medical text: keep that file where the data may be).
"""
import json

from absl import flags

from medjax.cli import common
from medjax.evals import report_generation

common.define_config_flag()
flags.DEFINE_string("workdir", "", "A pretraining run (its newest checkpoint), a step "
                    "directory or an export; empty = a random init of the config.")
flags.DEFINE_string("dataset", "covid_cxr", "TFDS dataset under config.data.dir with X-rays "
                    "and their texts.")
flags.DEFINE_string("split", "validation", "The split whose reports are generated (not train: "
                    "the baseline retrieves from it).")
flags.DEFINE_integer("length", 0, "Tokens to generate, BOS included; 0 = config.data.text_len.")
flags.DEFINE_string("out", "", "Write {generated, reference} per image to this JSON-lines file.")


def main(argv):
  del argv
  config = common.config()
  f = flags.FLAGS
  summary, generated, references = report_generation.run(config, f.workdir, f.dataset, f.split,
                                                         f.length or None)
  if f.out:
    with open(f.out, "w") as out:
      for g, r in zip(generated, references):
        out.write(json.dumps(dict(generated=g, reference=r)) + "\n")
  print(json.dumps(summary, indent=2))


def run():
  common.run(main, required=("config",))


if __name__ == "__main__":
  run()
