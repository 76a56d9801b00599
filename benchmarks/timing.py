"""Timing shared by the benchmarks."""
import time

import jax


def time_steps(compiled, state, batch, steps: int, warmup: int = 0):
  """Runs the compiled step `warmup + steps` times; returns (state, seconds of the timed steps).
  Each step is waited for, so a time is the step's own, not its dispatch."""
  times = []
  for i in range(warmup + steps):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    if i >= warmup:
      times.append(time.perf_counter() - t0)
  return state, times
