"""Compiles a config's train step for a mesh of fake CPU devices and prints per-device memory.

  medjax-aot --config medmllm_l --fake_devices 64

Nothing is trained or allocated: use it to check that a config fits a pod slice before renting
one. The printed JSON has bytes per device of params, optimizer state, and XLA's temporaries
per stage, and each stage's compile time.
"""
import json

import jax
from absl import flags

from medjax import sharding
from medjax.cli import common
from medjax.train import aot

common.define_config_flag()
flags.DEFINE_integer("fake_devices", 8, "CPU devices to pretend to have.")


def main(argv):
  del argv
  config = common.config()
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_num_cpu_devices", flags.FLAGS.fake_devices)  # before any device use
  report = aot.memory_report(config, sharding.make_mesh(config.mesh))
  print(json.dumps(report, indent=2))


def run():
  common.run(main, required=("config",))


if __name__ == "__main__":
  run()
