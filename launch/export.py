"""Exports a run's newest checkpoint (or a step directory) for others (medjax/export.py).

  python launch/export.py --config configs/medmllm_s.py --workdir runs/medmllm_s \
      --out runs/medmllm_s/export

Writes model.safetensors, config.json, tokenizer.model and the serialized image and text
encoders (jax.export, lowered for CPU, CUDA and TPU), then reloads them and checks that they
reproduce the model's embeddings on a test input.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from flax import nnx  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from medjax import export, sharding  # noqa: E402
from medjax.data import pipeline  # noqa: E402
from medjax.train import checkpoint  # noqa: E402
from medjax.train import state as state_lib  # noqa: E402

config_flags.DEFINE_config_file("config", None, "configs/<name>.py[:arg]", lock_config=True)
flags.DEFINE_string("workdir", None, "The run to export (its newest checkpoint) or a step dir.")
flags.DEFINE_string("out", None, "Directory to write the export to.")


def main(argv):
  del argv
  f = flags.FLAGS
  config = f.config
  ts = state_lib.setup(config, sharding.make_mesh(dict(data=1), jax.devices()[:1]))
  params = checkpoint.load_params(f.workdir, ts.abstract_state["params"], ts.logical_specs)
  export.export(config, ts.graphdef, params, ts.logical_specs,
                str(pipeline.tokenizer_path(config.data)), f.out)
  # Round trip: the reloaded artifact must give the embeddings of the checkpoint's model.
  gaps = export.round_trip_gaps(f.out, nnx.merge(ts.graphdef, params))
  for name, gap in gaps.items():
    if gap > 1e-4:
      raise SystemExit(f"{name}: the reloaded export differs from the model by {gap:.2e}")
    logging.info("%s: reloaded export = model (max abs diff %.1e)", name, gap)
  logging.info("Exported %s to %s", f.workdir, f.out)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir", "out"])
  app.run(main)
