"""How long an async Orbax save blocks the train loop, as a share of the step time, as JSON.

  python -m benchmarks.checkpoint_benchmark --config medmllm_s [--saves 5]

Runs the config's train step on synthetic batches; every other step it calls the same save the
trainer calls (state + data iterator + meta) and times (a) the call itself, i.e. what the loop
waits for, and (b) the save to its end on disk (`wait_until_finished`), for comparison.
"""
import json
import statistics
import tempfile
import time

import jax
from absl import flags

from benchmarks import timing
from medjax import sharding
from medjax.cli import common
from medjax.train import aot, checkpoint, state as state_lib

common.define_config_flag()
flags.DEFINE_integer("saves", 5, "Timed saves.")


def run(config, saves: int) -> dict:
  mesh = sharding.make_mesh(config.mesh)
  compiled, ts, _ = aot.compile_train_step(config, mesh)
  state = state_lib.init(config, ts)
  batch = aot.synthetic_batch(config, sharding.batch_sharding(mesh))
  state, times = timing.time_steps(compiled, state, batch, 5, warmup=1)
  step_seconds = statistics.median(times)
  blocking, total = [], []
  with tempfile.TemporaryDirectory() as workdir:
    mgr = checkpoint.manager(workdir, config)
    for i in range(saves):
      state, _ = timing.time_steps(compiled, state, batch, 1)
      t0 = time.perf_counter()
      checkpoint.save(mgr, i + 1, state, {"config": config.to_dict()})
      blocking.append(time.perf_counter() - t0)
      mgr.wait_until_finished()
      total.append(time.perf_counter() - t0)
    mgr.close()
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  return dict(state_mib=state_bytes / 2**20, step_seconds_median=step_seconds,
              save_blocking_seconds_median=statistics.median(blocking),
              save_total_seconds_median=statistics.median(total),
              blocking_share_of_step=statistics.median(blocking) / step_seconds)


def main(argv):
  del argv
  print(json.dumps(run(common.config(), flags.FLAGS.saves), indent=2))


if __name__ == "__main__":
  common.run(main)
