"""Throughput accounting (FLOPs from XLA, MFU) and the metric writers of a run."""
import json
import os

import jax
from tensorboardX import SummaryWriter


def compiled_flops(compiled) -> float:
  """FLOPs of one call of a compiled function, per device (XLA's SPMD cost is per partition)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
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
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")

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
