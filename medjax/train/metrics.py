"""Throughput accounting (matmul FLOPs of the traced step, MFU) and the metric files of a run."""
from __future__ import annotations

import json
import math
import struct
import time

import jax
from absl import logging
from jax.extend import core as jax_core
from tensorboardX.proto import event_pb2, summary_pb2
from tensorboardX.record_writer import masked_crc32c

from medjax import paths


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


def logged_rows(workdir) -> list[dict]:
  """The rows of `workdir`/metrics.jsonl, one per logged step (a repeated step: the last row
  wins; a line cut off by a kill is skipped)."""
  path = paths.path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  rows = {}
  for line in path.read_text().splitlines():
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      continue
    rows[int(row["step"])] = row
  return [rows[s] for s in sorted(rows)]


def evaluator_keys(rows: list[dict]) -> set[str]:
  """The in-loop evaluators' figures among `rows` (`logged_rows`): every key under a name the
  step-0 row holds (step 0 runs every evaluator: val/, retrieval/, probe/, ...), so also the
  val losses of a later stage's objectives, first logged with that stage."""
  at_start = next((r for r in rows if r["step"] == 0), {})
  names = {k.split("/")[0] for k in at_start if "/" in k}
  return {k for r in rows for k in r if k.split("/")[0] in names}


class MetricWriter:
  """Scalars to metrics.jsonl and a TensorBoard event file in the workdir, process 0 only.

  Written synchronously on the caller's thread: a full disk or a dead filesystem is an OSError
  at the step that met it, never a background thread that dies and leaves the loop blocked.
  A run resuming from step `resumed` (0: from scratch) first drops the rows after it (they are
  repeated now), and its event file starts with TensorBoard's restart marker, so neither the
  file nor the plots show a step twice."""

  def __init__(self, workdir, resumed: int):
    self._active = jax.process_index() == 0
    if not self._active:
      return
    workdir = paths.path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    jsonl = workdir / "metrics.jsonl"
    if jsonl.exists():
      lines = jsonl.read_text().splitlines()
      kept = [ln for ln in lines if _step_of(ln) is not None and _step_of(ln) <= resumed]
      if len(kept) != len(lines):
        logging.info("metrics.jsonl: %d rows after step %d (or cut off) dropped: this run "
                     "writes those steps again.", len(lines) - len(kept), resumed)
        paths.write_atomic(jsonl, "".join(ln + "\n" for ln in kept))
    self._jsonl = jsonl.open("a")
    tb = workdir / "tensorboard"
    tb.mkdir(parents=True, exist_ok=True)
    self._events = (tb / f"events.out.tfevents.{time.time():.0f}.medjax.p0").open("ab")
    self._event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
    self._event(event_pb2.Event(wall_time=time.time(), step=resumed + 1, session_log=(
        event_pb2.SessionLog(status=event_pb2.SessionLog.START))))

  def _event(self, event) -> None:
    data = event.SerializeToString()
    header = struct.pack("Q", len(data))
    self._events.write(header + struct.pack("I", masked_crc32c(header)) + data +
                       struct.pack("I", masked_crc32c(data)))
    self._events.flush()

  def write(self, step: int, scalars: dict) -> None:
    if not self._active:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    values = [summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
    self._event(event_pb2.Event(wall_time=time.time(), step=step,
                                summary=summary_pb2.Summary(value=values)))
    self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
    self._jsonl.flush()

  def close(self) -> None:
    if self._active:
      for f in (self._events, self._jsonl):
        try:
          f.close()
        except OSError as e:  # the disk error is reported where it happened
          logging.warning("closing a metrics file: %s", e)


def _step_of(line: str) -> int | None:
  try:
    return int(json.loads(line)["step"])
  except (json.JSONDecodeError, KeyError, TypeError, ValueError):
    return None
