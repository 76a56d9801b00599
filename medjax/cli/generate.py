"""Report generation from X-rays, fine-tuned and scored (medjax/evals/report_generation.py).

  # the decoder fine-tuned on 1%, 10% and 100% of the train image-report pairs, then greedy and
  # beam-search reports of the validation split:
  medjax-generate --config medmllm_s --workdir runs/medmllm_s \\
      --config.data.dir=$HOME/medjax_data --fractions 0.01,0.1,1.0
  # the model as it is (no fine-tuning), beam of 5, the image tower trained too:
  medjax-generate --config medmllm_s --workdir runs/medmllm_s --fractions 0 --beam 5
  medjax-generate --config medmllm_s --workdir runs/medmllm_s --train_tower --steps 500

Prints JSON: per fraction (the train pairs and patients it fine-tuned on, the captioning loss on
them before and after) and per decoding, BLEU-1..4, ROUGE-L, CIDEr and the clinical efficacy
(precision / recall / F1 of the CheXpert observations found present, micro and per
observation); the same for the nearest-train-report baseline. No report text is printed:
`--out file.jsonl` writes the reference and every generated text per image (medical text: keep
that file where the data may be).
"""
import json

from absl import flags

from medjax import paths
from medjax.cli import common
from medjax.evals import report_generation

common.define_config_flag()
flags.DEFINE_string("workdir", "", "A pretraining run (its newest checkpoint), a step "
                    "directory or an export; empty = a random init of the config.")
flags.DEFINE_string("dataset", "covid_cxr", "Dataset with X-rays and their texts: a TFDS name "
                    "under config.data.dir or a path to a converted dataset.")
flags.DEFINE_string("split", "validation", "The split whose reports are generated (not train: "
                    "fine-tuning and the baseline read it).")
flags.DEFINE_integer("length", 0, "Tokens to generate, BOS included; 0 = config.data.text_len.")
flags.DEFINE_list("fractions", ["0.01", "0.1", "1.0"], "Shares of the train patients whose pairs "
                  "fine-tune the decoder; 0 = the model as given.")
flags.DEFINE_integer("beam", 3, "Beam width of the beam-search reports (greedy ones are made too).")
flags.DEFINE_integer("steps", 200, "Fine-tuning steps per fraction.")
flags.DEFINE_float("lr", 3e-4, "Fine-tuning AdamW learning rate.")
flags.DEFINE_integer("batch_size", 16, "Fine-tuning pairs per step.")
flags.DEFINE_bool("train_tower", False, "Fine-tune the image tower with the decoder.")
flags.DEFINE_integer("seed", 0, "Patient sample and batch order of fine-tuning.")
flags.DEFINE_string("out", "", "Write the reference and generated texts per image to this "
                    "JSON-lines file.")


def main(argv):
  del argv
  config = common.config()
  f = flags.FLAGS
  summary, texts = report_generation.run(
      config, f.workdir, f.dataset, f.split, f.length or None, [float(x) for x in f.fractions],
      f.beam, f.steps, f.lr, f.batch_size, f.train_tower, f.seed)
  if f.out:
    rows = [dict(zip(texts, row)) for row in zip(*texts.values())]
    paths.write_atomic(f.out, "".join(json.dumps(r) + "\n" for r in rows))
  print(json.dumps(summary, indent=2))


def run():
  common.run(main, required=("config",))


if __name__ == "__main__":
  run()
