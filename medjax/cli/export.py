"""Exports a run's newest checkpoint (or a step directory) for others.

  medjax-export --config medmllm_s --workdir runs/medmllm_s \
      --out runs/medmllm_s/export [--format hf]

--format medjax (medjax/export.py): model.safetensors, config.json, tokenizer.model and the
serialized image and text encoders and greedy report generator (jax.export, lowered for CPU,
CUDA and TPU), then reloads them and checks that they reproduce the model's embeddings and
report tokens on a test input.
--format hf (medjax/hf/export.py; needs the hf extra): transformers directories for the image
and text towers (AutoModel.from_pretrained), their tokenizer and preprocessor config, the
projection heads and a model card; reloaded with transformers, their pooled features must be
the model's.
"""
from absl import flags, logging
from flax import nnx

from medjax import export, paths
from medjax.cli import common
from medjax.configs.resolve import HF_PREFIX
from medjax.data import pipeline
from medjax.train import summary, weights

common.define_config_flag()
flags.DEFINE_string("workdir", None, "The run to export (its newest checkpoint) or a step dir.")
flags.DEFINE_string("out", None, "Directory to write the export to.")
flags.DEFINE_enum("format", "medjax", ["medjax", "hf"],
                  "medjax: safetensors + serialized encoders; hf: Hugging Face transformers "
                  "directories.")


def main(argv):
  del argv
  config = common.config()
  f = flags.FLAGS
  # Exports compute in float32 whatever the run trained in (its params are float32): a serving
  # machine may lack fast bf16, and the round trip below can then demand 1e-4.
  config.model.dtype = "float32"
  ts, params = weights.load_model(config, f.workdir)
  tokenizer = str(pipeline.tokenizer_path(config.data))
  if f.format == "hf":
    from medjax.hf import export as hf_export  # torch / transformers: the hf extra
    classes = hf_export.export(config, params, ts.logical_specs, tokenizer, f.out,
                               summary.evaluations(f.workdir))
    _check(hf_export.round_trip_gaps(f.out, nnx.merge(ts.graphdef, params), config))
    logging.info("Exported %s to %s as Hugging Face %s", f.workdir, f.out, classes)
  else:
    if tokenizer.startswith(HF_PREFIX):
      raise SystemExit(f"data.tokenizer={tokenizer}: a Hugging Face tokenizer; export this run "
                       "with --format hf")
    export.export(config, ts.graphdef, params, ts.logical_specs, tokenizer, f.out)
    # Round trip: the reloaded artifact must give the embeddings (and every report token) of
    # the checkpoint's model.
    _check(export.round_trip_gaps(f.out, nnx.merge(ts.graphdef, params)))
    logging.info("Exported %s to %s", f.workdir, f.out)
  if (paths.path(f.workdir) / "metrics.jsonl").exists():  # a run's workdir: how it went
    print(summary.report(f.workdir, f.out), flush=True)


def _check(gaps: dict[str, float]) -> None:
  """The reloaded export must give the checkpoint's model's outputs."""
  for name, gap in gaps.items():
    if gap > 1e-4:
      raise SystemExit(f"{name}: the reloaded export differs from the model by {gap:.2e}")
    logging.info("%s: reloaded export = model (%s %.1e)", name,
                 "tokens differing:" if name == "report_generator" else "max abs diff", gap)


def run():
  common.run(main, required=("config", "workdir", "out"))


if __name__ == "__main__":
  run()
