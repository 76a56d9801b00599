"""Measures this machine's matmul peak (FLOP/s per device): the denominator of every MFU here.

  python -m benchmarks.peak_flops          # prints JSON

Two figures: f32 x f32 -> f32, and bf16 x bf16 -> f32 accumulate (what bf16 models run).
"""
import json
import statistics
import time

import jax
import jax.numpy as jnp


def matmul_peak(n: int = 2048, dtype=jnp.float32, repeats: int = 10) -> float:
  """Median FLOP/s of an n x n x n matmul on the first device."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
  f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
  f(a, b).block_until_ready()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    f(a, b).block_until_ready()
    times.append(time.perf_counter() - t0)
  return 2 * n**3 / statistics.median(times)


def measure() -> dict:
  return dict(device=jax.devices()[0].device_kind,
              f32_flops=matmul_peak(dtype=jnp.float32),
              bf16_in_f32_acc_flops=matmul_peak(dtype=jnp.bfloat16))


if __name__ == "__main__":
  print(json.dumps(measure(), indent=2))
