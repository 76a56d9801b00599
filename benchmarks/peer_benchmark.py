"""medjax's train step against the same model in plain PyTorch, alternating in one run, as JSON.

  python -m benchmarks.peer_benchmark --config clip_vit_s16 [--rounds 3] [--steps 2] \
      [--precisions float32,bfloat16] [--out results.json]

Needs torch (`pip install -e '.[hf]'`). Both sides start from the same parameters (medjax's
init copied into benchmarks/torch_peer.py's model; their first losses are printed side by side)
and train on the same synthetic batch. Each round times `--steps` steps of every side in turn
(medjax f32, torch f32, medjax bf16, torch bf16: A B A B ...), after --warmup steps each, and
measures the 2048^3 matmul peak of JAX and of torch per precision; the machine's peak is the
higher of the two. Reported: per-side median step time, each side's share of the machine's peak
(MFU, from medjax's matmul count of the step), the medjax / torch time ratio per precision
(per round and of the medians), the load average before and after, and README table rows.
bf16 sides run only where `precision.fast_bfloat16` says the CPU multiplies bf16 natively
(medjax: model.dtype=bfloat16; torch: autocast to bfloat16).
"""
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import torch
from absl import flags

from benchmarks import torch_peer
from medjax import objectives, paths, sharding
from medjax.cli import common
from medjax.models import precision
from medjax.train import aot, stages, state as state_lib
from medjax.train.peak import matmul_peak

common.define_config_flag()
flags.DEFINE_integer("rounds", 3, "Rounds; each times every side in turn.")
flags.DEFINE_integer("steps", 2, "Timed steps per side per round.")
flags.DEFINE_integer("warmup", 2, "Untimed steps per side before the first round.")
flags.DEFINE_list("precisions", ["float32", "bfloat16"], "Precisions to compare.")
flags.DEFINE_string("out", "", "Also write the JSON here.")


def _check_peer_config(config) -> None:
  active = objectives.active(config.objectives)
  if set(active) != {"image_text"} or active["image_text"].kind != "clip":
    raise ValueError("the PyTorch peer implements the CLIP loss only: config.objectives must "
                     f"train image_text with kind=clip alone, got {sorted(active)}")


def _medjax_side(config, dtype: str, mesh, batch):
  config = config.copy_and_resolve_references()
  config.model.dtype = dtype
  compiled, ts, compile_seconds = aot.compile_train_step(config, mesh)
  state = state_lib.init(config, ts)
  holder = dict(state=state)

  def step():
    holder["state"], m = compiled(holder["state"], batch)
    return float(jax.device_get(m["loss"]))  # waits for the step

  return step, holder, compile_seconds


def _torch_matmul_peak(dtype, n: int = 2048, repeats: int = 10) -> float:
  a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
  a @ b
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - t0)
  return 2 * n**3 / statistics.median(times)


def _peaks() -> dict:
  """Matmul FLOP/s of JAX and torch per precision (bf16: inputs bf16, f32 accumulation)."""
  return dict(jax_float32=matmul_peak(dtype=jnp.float32),
              jax_bfloat16=matmul_peak(dtype=jnp.bfloat16),
              torch_float32=_torch_matmul_peak(torch.float32),
              torch_bfloat16=_torch_matmul_peak(torch.bfloat16))


def _timed(step, steps: int) -> list[float]:
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
  return times


def run(config, *, rounds: int, steps: int, warmup: int, precisions) -> dict:
  _check_peer_config(config)
  fast, why = precision.fast_bfloat16(jax.devices()[0])
  precisions = [p for p in precisions if p == "float32" or fast]
  mesh = sharding.make_mesh(config.mesh)
  batch = aot.synthetic_batch(config, sharding.batch_sharding(mesh))
  host_batch = torch_peer.torch_batch(jax.device_get(batch))
  flops = aot.step_flops_per_device(config, mesh, stages.plan(config)[0]) * mesh.size

  sides, first_losses, compile_seconds = {}, {}, {}
  for p in precisions:
    step, holder, compile_seconds[p] = _medjax_side(config, p, mesh, batch)
    trainer = torch_peer.Trainer(config, bf16=p == "bfloat16")
    torch_peer.load_medjax(trainer.model, jax.device_get(holder["state"]["params"]))
    sides[f"medjax/{p}"], sides[f"torch/{p}"] = step, lambda t=trainer: t.step(host_batch)
  for name, step in sides.items():
    first_losses[name] = step()  # the same params and batch: the same loss up to rounding
    _timed(step, warmup - 1)

  times = {name: [] for name in sides}
  peaks = []
  load_before = os.getloadavg()
  for _ in range(rounds):
    peaks.append(_peaks())
    for name, step in sides.items():  # A B A B: every side in each round
      times[name] += _timed(step, steps)
  load_after = os.getloadavg()

  machine_peak = {p: statistics.median(max(r[f"jax_{p}"], r[f"torch_{p}"]) for r in peaks)
                  for p in precisions}
  result = dict(
      machine=dict(cpu=_cpu_model(), fast_bf16=fast, why=why, torch_threads=torch.get_num_threads(),
                   load_average_before=load_before, load_average_after=load_after),
      flops_per_step=flops, batch_size=config.batch_size, rounds=rounds, steps_per_round=steps,
      compile_seconds=compile_seconds, first_losses=first_losses, peaks_per_round=peaks,
      machine_peak=machine_peak, sides={}, ratios={})
  for name, ts in times.items():
    p = name.split("/")[1]
    median = statistics.median(ts)
    result["sides"][name] = dict(step_seconds=ts, median=median,
                                 mfu=flops / median / machine_peak[p])
  for p in precisions:
    mj, tj = times[f"medjax/{p}"], times[f"torch/{p}"]
    per_round = [statistics.median(mj[i:i + steps]) / statistics.median(tj[i:i + steps])
                 for i in range(0, len(mj), steps)]
    result["ratios"][p] = dict(medjax_over_torch=statistics.median(mj) / statistics.median(tj),
                               per_round=per_round)
  result["readme_rows"] = _rows(result)
  return result


def _rows(result) -> list[str]:
  rows = []
  for name, side in result["sides"].items():
    p = name.split("/")[1]
    rows.append(f"| {name} | {side['median']:.2f} s | {side['mfu']:.0%} of "
                f"{result['machine_peak'][p] / 1e9:.0f} GFLOP/s | "
                + (f"{result['ratios'][p]['medjax_over_torch']:.2f}x torch |"
                   if name.startswith("medjax") else "1.00 |"))
  return rows


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    return "unknown"


def main(argv):
  del argv
  f = flags.FLAGS
  result = run(common.config(), rounds=f.rounds, steps=f.steps, warmup=f.warmup,
               precisions=f.precisions)
  text = json.dumps(result, indent=2, default=float)
  print(text)
  if f.out:
    paths.write_atomic(f.out, text)


if __name__ == "__main__":
  common.run(main)
