"""Train-step speed of a config on this machine: step time, examples/s and MFU, as JSON.

  python -m benchmarks.step_benchmark --config medmllm_s [--steps 10]

The step runs on synthetic batches of the config's shapes (this measures the model and its
sharding, not the input pipeline). MFU = the step's FLOPs per device (`aot.step_flops_per_device`:
XLA's count with the layer stacks unrolled) / median step time / the matmul peak measured in the
same run (f32, or bf16->f32 when the model computes in bf16). `cpu_seconds_per_step` is this
process's CPU time (all its threads) per timed step: less disturbed than wall time by other
jobs on a shared machine, and what equal-CPU-time comparisons of recipes need.
"""
import json
import statistics
import time

from absl import flags

from benchmarks import peak_flops, timing
from medjax import objectives, sharding
from medjax.cli import common
from medjax.train import aot, metrics, stages
from medjax.train import state as state_lib

common.define_config_flag()
flags.DEFINE_integer("steps", 10, "Timed steps (after 2 warm-up steps).")


def _time_stage(config, mesh, stage, steps: int) -> dict:
  compiled, ts, compile_seconds = aot.compile_train_step(config, mesh, stage)
  state = state_lib.init(config, ts)
  batch = aot.synthetic_batch(config, sharding.batch_sharding(mesh))
  state, _ = timing.time_steps(compiled, state, batch, 0, warmup=2)
  cpu_start = time.process_time()
  _, times = timing.time_steps(compiled, state, batch, steps)
  cpu_seconds = (time.process_time() - cpu_start) / steps
  step_seconds = statistics.median(times)
  flops = aot.step_flops_per_device(config, mesh, stage)
  return dict(objectives=sorted(objectives.active(stage.objectives)),
              compile_seconds=round(compile_seconds, 2), step_seconds_median=step_seconds,
              step_seconds_min=min(times), step_seconds_max=max(times),
              cpu_seconds_per_step=cpu_seconds,
              examples_per_second=config.batch_size / step_seconds,
              flops_per_step_per_device=flops, achieved_flops_per_device=flops / step_seconds)


def run(config, steps: int) -> dict:
  """Times each stage's step (one stage unless config.stages); MFU against the peak measured
  in the same run (f32, or bf16 -> f32 when the model computes in bf16)."""
  mesh = sharding.make_mesh(config.mesh)
  peaks = peak_flops.measure()
  peak = peaks["bf16_in_f32_acc_flops" if config.model.dtype == "bfloat16" else "f32_flops"]
  out = dict(devices=mesh.size, mesh=dict(mesh.shape), batch_size=config.batch_size,
             measured_peak=peaks, stages={})
  for stage in stages.plan(config):
    result = _time_stage(config, mesh, stage, steps)
    result["mfu"] = metrics.mfu(result["flops_per_step_per_device"],
                                result["step_seconds_median"], peak)
    out["stages"][stage.name] = result
  return out


def main(argv):
  del argv
  print(json.dumps(run(common.config(), flags.FLAGS.steps), indent=2))


if __name__ == "__main__":
  common.run(main)
