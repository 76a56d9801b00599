"""Pretrains Med-MLLM (medjax/train/loop.py).

  medjax-train --config medmllm_s --workdir runs/medmllm_s [--config.mesh.fsdp=4 ...]

Re-running with the same --workdir resumes from its newest complete checkpoint (on any mesh and
any number of processes). On several hosts, one process each (see medjax/cli/common.py).
"""
from absl import flags

from medjax.cli import common
from medjax.train import loop

common.define_config_flag()
common.define_process_flags()
flags.DEFINE_string("workdir", None, "Metrics, TensorBoard logs and checkpoints go here (a "
                    "local path or a cloud URL such as gs://bucket/run).")


def main(argv):
  del argv
  config = common.config()
  common.start_processes(config)
  loop.train(config, flags.FLAGS.workdir)


def run():
  common.run(main, required=("config", "workdir"))


if __name__ == "__main__":
  run()
