"""Pretrains Med-MLLM (medjax/train/loop.py).

  medjax-train --config medmllm_s --workdir runs/medmllm_s [--config.mesh.fsdp=4 ...]

Re-running with the same --workdir resumes from its newest checkpoint.
"""
import jax
from absl import flags

from medjax.cli import common
from medjax.train import loop

common.define_config_flag()
flags.DEFINE_string("workdir", None, "Metrics, TensorBoard logs and checkpoints go here.")
flags.DEFINE_bool("multiprocess", False, "Multi-host run: call jax.distributed.initialize().")


def main(argv):
  del argv
  config = common.config()
  if flags.FLAGS.multiprocess:
    jax.distributed.initialize()  # coordinator, process count and id from the environment
  loop.train(config, flags.FLAGS.workdir)


def run():
  common.run(main, required=("config", "workdir"))


if __name__ == "__main__":
  run()
