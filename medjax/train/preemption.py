"""Stopping a run cleanly: preemption notices, Ctrl-C, and waits that cannot hang.

SIGTERM is the preemption notice of TPU VMs, Kubernetes and SLURM: the run saves at the next
step boundary and exits 0. On several processes a SIGTERM to any one of them reaches all
(JAX's preemption sync point: every process stops at the same step). SIGINT (Ctrl-C) asks for
the same clean stop. A second signal, e.g. while a save is stuck on a dead disk, exits at once
with a message naming the newest complete checkpoint. `bounded` runs a blocking call (waiting
for an async save) with a time limit.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

import jax
from absl import logging
from jax.experimental import multihost_utils


class StopRequests:
  """Use as a context manager around the loop; `requested(step)` after every step."""

  def __init__(self, newest_complete):
    self._newest_complete = newest_complete  # () -> str, for the message of a forced exit
    self._signals = 0
    self._previous = {}
    self._multi = jax.process_count() > 1

  def __enter__(self):
    kinds = (signal.SIGINT,) if self._multi else (signal.SIGTERM, signal.SIGINT)
    if threading.current_thread() is threading.main_thread():  # signals reach the main thread
      for kind in kinds:
        self._previous[kind] = signal.signal(kind, self._on_signal)
    return self

  def __exit__(self, *exc):
    for kind, handler in self._previous.items():
      signal.signal(kind, handler)
    if self._signals:
      logging.warning("Stopped on request after saving; rerun the same command to resume.")
    return False

  def _on_signal(self, number, frame):
    del frame
    self._signals += 1
    name = signal.Signals(number).name
    if self._signals > 1:
      sys.stderr.write(f"\nmedjax: second stop signal ({name}): exiting now without waiting "
                       f"for the running step or save. {self._newest_complete()}\n")
      sys.stderr.flush()
      os._exit(128 + number)
    logging.warning("%s: stopping after the next step's save (send it again to stop now).",
                    name)
    if self._multi:  # JAX's preemption sync manager listens for SIGTERM: tell every process
      os.kill(os.getpid(), signal.SIGTERM)

  def requested(self, step: int) -> bool:
    """Whether to save and stop after `step`: the same answer, at the same step, on every
    process (multi-process: a coordination-service sync point, ~0.1 ms a call)."""
    if self._multi:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._signals > 0


def bounded(fn, seconds: float, what: str):
  """`fn()` in a helper thread, waited for at most `seconds`; its exception is re-raised here.
  A call still running after that raises TimeoutError naming `what` (the thread is left to the
  process exit: it is blocked in I/O that no timeout of ours can interrupt)."""
  result = {}

  def call():
    try:
      result["value"] = fn()
    except BaseException as e:  # re-raised on the caller's thread
      result["error"] = e

  thread = threading.Thread(target=call, name=f"medjax-{what.split()[0]}", daemon=True)
  thread.start()
  thread.join(seconds)
  if thread.is_alive():
    raise TimeoutError(f"{what} did not finish within {seconds:g} s (stalled or full storage?)")
  if "error" in result:
    raise result["error"]
  return result.get("value")
