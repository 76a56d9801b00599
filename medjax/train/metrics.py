"""Throughput accounting (matmul FLOPs of the traced step, MFU) and the metric writers of a run."""
import json
import math
import os

import jax
from absl import logging
from jax.extend import core as jax_core
from tensorboardX import SummaryWriter


def unrolled(config):
  """`config` with every layer stack unrolled (model.scan_layers False). FLOP counts no longer
  need it (`matmul_flops` multiplies a scanned body by its trip count)."""
  out = config.copy_and_resolve_references()
  out.model.scan_layers = False
  return out


def matmul_flops(jaxpr) -> float:
  """FLOPs of the matrix multiplications of a (closed) jaxpr: 2 x output size x contracted size
  per dot_general (what MFU counts; elementwise work is left out), entering every sub-jaxpr: a
  scan's body counts once per iteration, a cond counts its costliest branch. A while loop's
  trip count is unknown when tracing: its body counts once, and a warning says so."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)  # a ClosedJaxpr's Jaxpr
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(
          lhs[i] for i in lhs_contract)
      continue
    inner = [matmul_flops(sub) for sub in jax_core.jaxprs_in_params(eqn.params)]
    if not inner:
      continue
    if name == "cond":
      total += max(inner)
    else:
      if name == "while":
        logging.warning("matmul_flops: a while loop's body is counted once (trip count unknown).")
      total += eqn.params.get("length", 1) * sum(inner) if name == "scan" else sum(inner)
  return total


def model_flops(fn, *args) -> float:
  """Matmul FLOPs of one call of `fn(*args)` over the whole mesh (args may be
  ShapeDtypeStructs): counted on the traced program (`matmul_flops`), nothing is lowered or
  compiled, so this takes the time of one trace at any depth. With model.remat the recomputed
  forward is counted too (hardware, not model, FLOPs): count a remat "none" config for MFU."""
  return matmul_flops(jax.jit(fn).trace(*args).jaxpr)


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
