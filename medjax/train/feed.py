"""The trainer's input: the batch of each step, as global arrays on the mesh, one step ahead.

Each stage reads the stream of its sources (medjax/train/stages.py); step s reads that stream's
batch s - stream_start(s), so a run started or resumed at any step, on any number of processes,
reads exactly the batches of an uninterrupted run. `Feed.next(step)` returns step's batch and
starts building the next one, so the host's decoding and the transfer overlap the running step.
"""
from __future__ import annotations

import hashlib
import json
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

from medjax import paths, sharding
from medjax.data import pipeline
from medjax.train import stages


class Feed:

  def __init__(self, config, data_cfg, schedule, mesh, *, workdir):
    self._config, self._data_cfg, self._schedule = config, data_cfg, schedule
    self._sharding = sharding.batch_sharding(mesh)
    self._stream = None  # (stream start step, iterator)
    self._ahead = None  # (step, thread, result dict) of the batch being built
    # With config.record_batch_digests: the digest of each GLOBAL batch (all processes' rows),
    # written by process 0, proves that a resumed or re-sharded run read the batches of an
    # uninterrupted one; each process's row digests show which rows it read itself.
    self._digests = self._rows = None
    if config.record_batch_digests:
      workdir = paths.path(workdir)
      self._rows = (workdir / f"batch_rows.p{jax.process_index()}.jsonl").open("a")
      if jax.process_index() == 0:
        self._digests = (workdir / "batch_digests.jsonl").open("a")

  def next(self, step: int) -> dict:
    """The global batch of `step` (steps count from 1), then the next one is started."""
    if self._ahead is not None and self._ahead[0] == step:
      _, thread, result = self._ahead
      thread.join()
      if "error" in result:
        raise result["error"]
      local, batch = result["batch"]
    else:
      local, batch = self._build(step)
    self._ahead = None
    if self._config.record_batch_digests:
      self._record(step, local)  # on the main thread: process_allgather is a collective
    if step < self._config.total_steps:
      result = {}
      thread = threading.Thread(target=self._build_into, args=(step + 1, result), daemon=True,
                                name="medjax-feed")
      thread.start()
      self._ahead = (step + 1, thread, result)
    return batch

  def _build_into(self, step, result):
    try:
      result["batch"] = self._build(step)
    except BaseException as e:  # surfaced on the main thread by next()
      result["error"] = e

  def _build(self, step: int) -> dict:
    start = stages.stream_start(self._schedule, step)
    if self._stream is None or self._stream[0] != start:
      self.close_stream()
      stage = stages.at(self._schedule, step)
      iterator = pipeline.make_iterator(stages.data_config(self._data_cfg, stage),
                                        batch_size=self._config.batch_size,
                                        seed=self._config.seed, start_batch=step - start)
      self._stream = (start, iterator)
    local = next(self._stream[1])
    return local, jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self._sharding, x), local)

  def _record(self, step, local) -> None:
    n = len(next(iter(local.values())))
    rows = [digest({k: v[i] for k, v in local.items()}) for i in range(n)]
    self._rows.write(json.dumps({"step": step, "rows": rows}) + "\n")
    self._rows.flush()
    whole = (multihost_utils.process_allgather(local, tiled=True) if jax.process_count() > 1
             else local)
    if self._digests is not None:
      self._digests.write(json.dumps({"step": step, "sha256": digest(whole)}) + "\n")
      self._digests.flush()

  def close_stream(self) -> None:
    if self._stream is not None:
      close = getattr(self._stream[1], "close", None)
      if close:
        close()  # its prefetch threads / worker processes
      self._stream = None

  def close(self) -> None:
    if self._ahead is not None:
      self._ahead[1].join()
      self._ahead = None
    self.close_stream()
    for f in (self._digests, self._rows):
      if f is not None:
        f.close()


def digest(batch: dict) -> str:
  """sha256 of every key and array of a (host) batch."""
  h = hashlib.sha256()
  for key in sorted(batch):
    h.update(key.encode())
    h.update(np.ascontiguousarray(batch[key]).tobytes())
  return h.hexdigest()
