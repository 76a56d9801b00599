"""Where one train step's time goes: a jax.profiler trace of a step, its XLA kernels summed by
kind, as JSON (the README's performance section quotes it).

  python -m benchmarks.profile_step --config clip_vit_s16 [--stage 0] [--top 12]
  python -m benchmarks.profile_step --config clip_vit_s16 --config.model.scan_layers=true

Kinds are the kernel names without their numeric suffix: `ynn_fusion` (XLA CPU's YNNPACK
fusions: the matmuls with what XLA fused around them), `dot_general` (matmuls left to Eigen),
`*dynamic-update-slice*` / `*dynamic-slice*` (a scanned stack writing and reading one layer of
its stacked arrays), `wrapped_broadcast`, `copy`, and the element-wise loop fusions. Times are
summed over XLA's worker threads (thread-seconds), beside the step's wall time and its matmul
FLOPs; the shares are of the summed kernel time.
"""
import collections
import json
import re
import tempfile
import time

import jax
from absl import flags
from jax.profiler import ProfileData

from benchmarks import timing
from medjax import paths, sharding
from medjax.cli import common
from medjax.train import aot, stages, state as state_lib

common.define_config_flag()
flags.DEFINE_integer("stage", 0, "Index of the stage in the config's plan.")
flags.DEFINE_integer("top", 12, "Kernel kinds to list.")

# Thread-level spans that contain the kernels rather than being kernels.
_CONTAINERS = ("ThunkExecutor", "SlinkyThreadPool", "while")


def kernel_seconds(trace_dir: str) -> collections.Counter:
  """Seconds per kernel kind on XLA's worker threads of the one trace under `trace_dir`."""
  (xplane,) = paths.path(trace_dir).glob("plugins/profile/*/*.xplane.pb")
  kinds = collections.Counter()
  for plane in ProfileData.from_file(str(xplane)).planes:
    for line in plane.lines:
      if "Eigen" not in line.name:  # XLA CPU's intra-op pool runs every kernel
        continue
      for event in line.events:
        if not event.name.startswith(_CONTAINERS):
          kinds[re.sub(r"\.\d+$", "", event.name)] += event.duration_ns / 1e9
  return kinds


def main(argv):
  del argv
  config = common.config()
  mesh = sharding.make_mesh(config.mesh)
  stage = stages.plan(config)[flags.FLAGS.stage]
  compiled, ts, compile_seconds = aot.compile_train_step(config, mesh, stage)
  state = state_lib.init(config, ts)
  batch = aot.synthetic_batch(config, sharding.batch_sharding(mesh))
  state, _ = timing.time_steps(compiled, state, batch, steps=0, warmup=2)
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      t0 = time.perf_counter()
      state, _ = timing.time_steps(compiled, state, batch, steps=1)
      wall = time.perf_counter() - t0
    kinds = kernel_seconds(trace_dir)
  total = sum(kinds.values())
  flops = aot.step_flops_per_device(config, mesh, stage) * mesh.size
  print(json.dumps(dict(
      stage=stage.name, dtype=config.model.dtype,
      scan_layers=config.model.scan_layers, compile_seconds=round(compile_seconds, 1),
      step_seconds=round(wall, 2), matmul_tflop=round(flops / 1e12, 3),
      kernel_thread_seconds=round(total, 2),
      top=[dict(kind=k, seconds=round(s, 3), share=round(s / total, 3))
           for k, s in kinds.most_common(flags.FLAGS.top)]), indent=2))


if __name__ == "__main__":
  common.run(main)
