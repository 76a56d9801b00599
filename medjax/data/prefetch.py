"""Batches put on the devices ahead of the step that reads them.

  batches = prefetch.ToDevice(data_iter, put=global_batch, size=1)
  for step in ...:
    batch = next(batches)          # already on the devices (or on its way)
    state, metrics = compiled(state, batch)
  checkpoint.save(ckpt, step, state, batches, meta)  # the data position of the last batch *read*

`put` (e.g. `jax.device_put` with a sharding, or `jax.make_array_from_process_local_data`)
starts an asynchronous copy and returns at once, so keeping `size` batches put ahead lets the
copies (and the pipeline's own `next`) overlap the running step without any thread.
"""
from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterator


class ToDevice:
  """Iterator of `put(batch)` over `iterator`'s batches, `size` of them read and put ahead.

  `get_state()` / `set_state()` speak for the batches handed out, not the ones read ahead: the
  state after the last batch `next` returned, so a checkpoint taken after step n resumes at the
  batch of step n + 1, exactly as with `iterator` itself. The state is the JSON bytes of
  `iterator.get_state()`, which grain.checkpoint.CheckpointHandler saves and restores as is.
  """

  def __init__(self, iterator, put: Callable, size: int = 1):
    if size < 0:
      raise ValueError(f"prefetch size must be >= 0, got {size}")
    self._iterator = iterator
    self._put = put
    self._size = size
    self._ahead: collections.deque = collections.deque()  # (put batch, state after it)
    self._state = iterator.get_state()  # after the last batch handed out

  def __iter__(self) -> Iterator:
    return self

  def __next__(self):
    while len(self._ahead) <= self._size:
      try:
        batch = next(self._iterator)
      except StopIteration:
        break
      self._ahead.append((self._put(batch), self._iterator.get_state()))
    if not self._ahead:
      raise StopIteration
    batch, self._state = self._ahead.popleft()
    return batch

  def get_state(self) -> bytes:
    return json.dumps(self._state).encode()

  def set_state(self, state: bytes | dict) -> None:
    """Moves to `state` (from get_state, or the wrapped iterator's own dict); batches read
    ahead are dropped."""
    state = json.loads(state) if isinstance(state, (bytes, str)) else state
    self._ahead.clear()
    self._iterator.set_state(state)
    self._state = state

  def start_prefetch(self) -> None:
    """Called by Grain's checkpoint handler after a restore: the wrapped iterator's own
    background reading restarts; this one reads ahead at the next `next`."""
    start = getattr(self._iterator, "start_prefetch", None)
    if start is not None:
      start()

  def close(self) -> None:
    self._ahead.clear()
    close = getattr(self._iterator, "close", None)
    if close is not None:
      close()
