"""Several processes (one per host of a pod slice, or per GPU node) that train as one.

`start` joins the processes into one JAX runtime before anything touches a device: with an
explicit coordinator (`host:port`, bound to that address only, never to every interface), or by
JAX's own detection on TPU VMs and under SLURM. `Watchdog` then makes a lost process a clear,
bounded failure: every process heartbeats through the coordination service's key-value store
from a background thread; when a peer stops (its host died, it was killed), the others log
which process was lost and exit with LOST_PEER_EXIT within `timeout` seconds, instead of hanging
in a collective until JAX's own heartbeat check aborts them with a C++ stack trace. A collective
may also fail at once when a peer dies (CPU gloo: "Connection reset by peer"): that error does
not end the watch, so the lost peer is still what the process reports and exits with.

Process 0 is the exception: it hosts JAX's coordination service, and when it is lost JAX's
runtime itself ends every other process at once (SIGABRT, exit code 134; its log says "Terminating
process because the JAX distributed service detected fatal errors ... the leader task was
preempted/died"). JAX offers no way to hand that case to the watchdog, so it is a non-zero exit
right away, not LOST_PEER_EXIT; a relaunch resumes the same way.
"""
from __future__ import annotations

import logging
import os
import threading
import time

import jax
from absl import logging as absl_logging
from jax._src import distributed

log = logging.getLogger(__name__)

LOST_PEER_EXIT = 75  # EX_TEMPFAIL: relaunch every process to resume from the last checkpoint
_KEY = "medjax/alive/{}"
_DONE = "medjax/done/{}"
_FAILED = "medjax/failed/{}"


def start(*, coordinator: str = "", num_processes: int = 0, process_id: int = -1,
          auto: bool = False, peer_timeout: float = 60.0) -> None:
  """Joins this process to the others (no-op for a single process). `coordinator`,
  `num_processes` and `process_id` all given: an explicit start (what the tests use); `auto`:
  JAX's detection (TPU VM metadata, SLURM's environment). JAX's own heartbeat timeout is set past
  the watchdog's, so the watchdog's clear error comes first."""
  explicit = bool(coordinator) or num_processes > 0 or process_id >= 0
  if explicit and not (coordinator and num_processes > 0 and 0 <= process_id < num_processes):
    raise ValueError(f"--coordinator={coordinator!r} --num_processes={num_processes} "
                     f"--process_id={process_id}: give all three (host:port, N >= 1, "
                     "0 <= id < N), or --multiprocess for detection on TPU VMs / SLURM")
  if not (explicit or auto):
    return
  timeouts = dict(heartbeat_timeout_seconds=int(peer_timeout) + 30)
  if explicit:
    if num_processes == 1:
      return
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id, coordinator_bind_address=coordinator,
                               cluster_detection_method="deactivate", **timeouts)
  else:
    jax.distributed.initialize(**timeouts)
  name_process_in_logs()
  log.info("Process %d of %d joined (coordinator %s).", jax.process_index(),
           jax.process_count(), coordinator or "detected")
  if jax.default_backend() == "cpu":
    # On CPU only process 0 ever loaded a step from JAX's persistent compilation cache (JAX
    # writes entries from process 0 alone; the others compiled on every launch), so a relaunch
    # ran process 0 on an earlier run's executable beside its peers' fresh compiles, and such a
    # mix hung a resumed run in its first collective (tests/train/test_multiprocess.py). Every
    # process compiles now, as the others did anyway: no slower.
    jax.config.update("jax_enable_compilation_cache", False)
    log.info("Persistent compilation cache off: a multi-process CPU run compiles in every "
             "process.")


def name_process_in_logs() -> None:
  """Prefixes every log line with the process (`[p1/4]`): interleaved pod logs stay readable."""
  prefix = f"[p{jax.process_index()}/{jax.process_count()}] "
  handler = absl_logging.get_absl_handler()
  formatter = handler.formatter or logging.Formatter()

  class Prefixed(logging.Formatter):
    def format(self, record):
      return prefix + formatter.format(record)

  handler.setFormatter(Prefixed())


class Watchdog:
  """Heartbeats of every process; a peer silent for `timeout` s ends this process (see module
  docstring). A no-op on one process. Use as a context manager around the run."""

  def __init__(self, timeout: float):
    self.timeout = float(timeout)
    self._interval = max(0.5, self.timeout / 6)
    self._client = distributed.global_state.client
    self._stop = threading.Event()
    self._thread = None

  def __enter__(self):
    if self._client is None or jax.process_count() == 1:
      return self
    self._me = jax.process_index()
    self._peers = [p for p in range(jax.process_count()) if p != self._me]
    self._thread = threading.Thread(target=self._run, name="medjax-watchdog", daemon=True)
    self._thread.start()
    log.info("Watching %d other process(es): one silent for %.0f s ends this one (exit %d).",
             len(self._peers), self.timeout, LOST_PEER_EXIT)
    return self

  def __exit__(self, exc_type, exc, tb):
    if self._thread is None:
      return False
    if exc_type is not None:
      self._watch_after(exc)
    self._stop.set()
    self._thread.join()
    if exc_type is None:  # only a clean end makes this process's silence expected
      self._client.key_value_set(_DONE.format(self._me), "1", allow_overwrite=True)
    return False

  def _watch_after(self, error: BaseException) -> None:
    """The run failed here: this error may be a collective broken by a dead peer. The watch goes
    on (the heartbeats too) for up to `timeout` s, so a lost peer still ends this process with
    LOST_PEER_EXIT; otherwise, after raising, JAX's shutdown barrier at exit would wait for the
    dead peer and abort (SIGABRT) at JAX's own heartbeat timeout. Peers that failed as well
    (the same error everywhere) end the wait early, and `error` is raised as it is."""
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    log.warning("Process %d failed (%s: %s); checking for up to %.0f s whether another process "
                "was lost.", self._me, type(error).__name__, first, self.timeout)
    deadline = time.monotonic() + self.timeout + 3 * self._interval  # a beat, a check, slack
    try:
      self._client.key_value_set(_FAILED.format(self._me), "1", allow_overwrite=True)
      while self._thread.is_alive() and time.monotonic() < deadline:
        if all(_try_get(self._client, _FAILED.format(p)) is not None
               or _try_get(self._client, _DONE.format(p)) is not None for p in self._peers):
          return
        time.sleep(self._interval / 4)
    except Exception:  # the coordination service is gone: the watchdog thread reports it
      self._thread.join(max(0.0, deadline - time.monotonic()))

  def _run(self) -> None:
    beat, seen = 0, {p: (None, time.monotonic()) for p in self._peers}
    while not self._stop.wait(self._interval):
      try:
        beat += 1
        self._client.key_value_set(_KEY.format(self._me), str(beat), allow_overwrite=True)
        for p in self._peers:
          if _try_get(self._client, _DONE.format(p)) is not None:
            continue  # finished cleanly: silence is expected
          value = _try_get(self._client, _KEY.format(p))
          last, since = seen[p]
          if value != last:
            seen[p] = (value, time.monotonic())
          elif time.monotonic() - since > self.timeout:
            self._lost(f"process {p} sent no heartbeat for {time.monotonic() - since:.0f} s "
                       "(its host died, was preempted or was killed)")
      except Exception as e:  # the coordination service itself is gone: process 0 died
        if self._stop.is_set():
          return
        self._lost(f"the coordinator (process 0) is unreachable ({type(e).__name__}: "
                   f"{str(e).splitlines()[0][:200]})")

  def _lost(self, what: str) -> None:
    log.error("Lost a process: %s. Process %d stops now (exit %d); the newest complete "
              "checkpoint in the workdir is intact: relaunch every process with the same "
              "command to resume from it.", what, self._me, LOST_PEER_EXIT)
    for handler in logging.getLogger().handlers + [absl_logging.get_absl_handler()]:
      handler.flush()
    os._exit(LOST_PEER_EXIT)  # the main thread may be blocked in a collective: exit from here


def _try_get(client, key: str):
  try:
    return client.key_value_try_get(key)
  except Exception as e:  # NOT_FOUND until the peer's first heartbeat
    if "NOT_FOUND" in str(e) or "not found" in str(e).lower():
      return None
    raise

