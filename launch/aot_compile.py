"""Compiles a config's train step for a mesh of fake devices and prints per-device memory.

  python launch/aot_compile.py --config configs/medmllm_l.py --fake_devices 64 \
      --config.mesh.fsdp=-1 --config.mesh.data=1

Nothing is trained or allocated: use it to check that a config fits a pod slice before renting
one. The printed JSON has bytes per device of params, optimizer state, and XLA's temporaries.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The fake device count must be set before jax starts.
_n = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--fake_devices=")), None)
if _n is None and "--fake_devices" in sys.argv:
  _n = sys.argv[sys.argv.index("--fake_devices") + 1]
if _n:
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={int(_n)}")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from medjax import sharding  # noqa: E402
from medjax.train import aot  # noqa: E402

config_flags.DEFINE_config_file("config", None, "configs/<name>.py[:arg]", lock_config=True)
flags.DEFINE_integer("fake_devices", 8, "CPU devices to pretend to have (read before jax starts).")


def main(argv):
  del argv
  config = flags.FLAGS.config
  report = aot.memory_report(config, sharding.make_mesh(config.mesh))
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
