"""Throughput accounting (FLOPs from XLA, MFU) and the metric writers of a run."""
import json
import os

import jax
from tensorboardX import SummaryWriter


def unrolled(config):
  """`config` with every layer stack unrolled (model.scan_layers False): what `model_flops`
  must trace, since XLA counts a scanned loop body once, whatever its trip count (medmllm_s's
  6-block image tower would read as 1/6 of its FLOPs)."""
  out = config.copy_and_resolve_references()
  out.model.scan_layers = False
  return out


def model_flops(fn, *args) -> float:
  """FLOPs of one call of `fn(*args)` over the whole mesh (args may be ShapeDtypeStructs):
  XLA's count of the traced, unoptimised program; nothing is compiled. Build `fn` from an
  `unrolled` config. With model.remat the recomputed forward is counted too (hardware, not
  model, FLOPs)."""
  cost = jax.jit(fn).lower(*args).cost_analysis()
  return float(cost.get("flops", 0.0)) if cost else 0.0


def mfu(flops_per_device: float, step_seconds: float, peak_flops_per_device: float) -> float:
  """Model FLOPs utilisation: achieved FLOP/s of one device over its peak."""
  return flops_per_device / step_seconds / peak_flops_per_device


class MetricWriter:
  """Scalars to TensorBoard event files and to metrics.jsonl in the workdir; process 0 only."""

  def __init__(self, workdir: str):
    self._active = jax.process_index() == 0
    if self._active:
      os.makedirs(workdir, exist_ok=True)
      self._tb = SummaryWriter(logdir=os.path.join(workdir, "tensorboard"))
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")  # noqa: SIM115

  def write(self, step: int, scalars: dict):
    if not self._active:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    for name, value in scalars.items():
      self._tb.add_scalar(name, value, step)
    self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
    self._jsonl.flush()

  def close(self):
    if self._active:
      self._tb.close()
      self._jsonl.close()
