"""Exports a run's newest checkpoint (or a step directory) for others (medjax/export.py).

  medjax-export --config medmllm_s --workdir runs/medmllm_s \
      --out runs/medmllm_s/export

Writes model.safetensors, config.json, tokenizer.model and the serialized image and text
encoders and greedy report generator (jax.export, lowered for CPU, CUDA and TPU), then reloads
them and checks that they reproduce the model's embeddings and report tokens on a test input.
"""
from absl import flags, logging
from flax import nnx

from medjax import export, paths
from medjax.cli import common
from medjax.data import pipeline
from medjax.train import summary, weights

common.define_config_flag()
flags.DEFINE_string("workdir", None, "The run to export (its newest checkpoint) or a step dir.")
flags.DEFINE_string("out", None, "Directory to write the export to.")


def main(argv):
  del argv
  config = common.config()
  f = flags.FLAGS
  ts, params = weights.load_model(config, f.workdir)
  export.export(config, ts.graphdef, params, ts.logical_specs,
                str(pipeline.tokenizer_path(config.data)), f.out)
  # Round trip: the reloaded artifact must give the embeddings (and every report token) of the
  # checkpoint's model.
  gaps = export.round_trip_gaps(f.out, nnx.merge(ts.graphdef, params))
  for name, gap in gaps.items():
    if gap > 1e-4:
      raise SystemExit(f"{name}: the reloaded export differs from the model by {gap:.2e}")
    logging.info("%s: reloaded export = model (%s %.1e)", name,
                 "tokens differing:" if name == "report_generator" else "max abs diff", gap)
  logging.info("Exported %s to %s", f.workdir, f.out)
  if (paths.path(f.workdir) / "metrics.jsonl").exists():  # a run's workdir: how it went
    print(summary.report(f.workdir), flush=True)


def run():
  common.run(main, required=("config", "workdir", "out"))


if __name__ == "__main__":
  run()
