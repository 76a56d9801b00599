"""The peak FLOP/s of one device at the run's compute dtype: the denominator of the trainer's MFU.

`config.peak_flops_per_device` > 0 is taken as given. 0 (the default) finds it:
- CPU: measured once per process and dtype, a 2048^3 matmul timed on one of the run's devices
  in this process (about a second). A process's CPU devices share one pool of cores, so each
  device's peak is the measured one over the number of them the run uses (a run on 8 fake
  devices gives each an eighth of the machine; a run on 1 of them, all of it).
  A CPU's peak is the machine's own: with AMX the bfloat16 peak is ~5x the float32 one, so one
  constant for every machine and dtype would misstate MFU by as much.
- TPU / GPU: the chip's published dense bfloat16 peak, by `device_kind` (`BF16_PEAKS`). A
  float32 run or a chip not in the table logs no MFU (a warning names the field to set).
"""
from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
from absl import logging

# Dense bfloat16 FLOP/s per JAX device, by a lower-case substring of `device_kind`; the first
# match wins, so a more specific name comes before its prefix.
BF16_PEAKS = (
  ("tpu v6 lite", 918e12),  # Trillium (v6e)
  ("tpu v5 lite", 197e12),  # v5e
  ("tpu v5", 459e12),  # v5p
  ("tpu v4", 275e12),  # one device per chip (megacore)
  ("h100 pcie", 756e12),
  ("h100", 989e12),  # SXM
  ("a100", 312e12),
)


def matmul_peak(n: int = 2048, dtype=jnp.float32, repeats: int = 10, device=None) -> float:
  """Median FLOP/s of an n x n x n matmul on `device` (default: the first local one), inputs in
  `dtype`, accumulated in float32 (as every tower's matmuls are, medjax/models/precision.py)."""
  device = jax.local_devices()[0] if device is None else device
  a, b = (jax.device_put(jax.random.normal(jax.random.key(i), (n, n)).astype(dtype), device)
          for i in (0, 1))
  f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
  f(a, b).block_until_ready()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    f(a, b).block_until_ready()
    times.append(time.perf_counter() - t0)
  return 2 * n**3 / statistics.median(times)


def per_device(configured: float, dtype, devices) -> float | None:
  """`configured` when > 0, else the peak of one of `devices` (a run's mesh devices) at `dtype`
  as the module docstring says; None when it cannot be known."""
  if configured > 0:
    return float(configured)
  dtype = jnp.dtype(dtype)
  devices = list(devices)
  device = devices[0]
  if device.platform == "cpu":
    local = [d for d in devices if d.process_index == jax.process_index()]
    if dtype.name not in _MEASURED:  # the whole machine's, whatever the run's device count
      _MEASURED[dtype.name] = matmul_peak(dtype=dtype, device=local[0])
    peak = _MEASURED[dtype.name] / len(local)
    logging.info("Peak for MFU: %.3g FLOP/s per CPU device at %s (measured; %d device(s) share "
                 "the cores).", peak, dtype.name, len(local))
    return peak
  kind = getattr(device, "device_kind", "").lower()
  peak = next((p for name, p in BF16_PEAKS if name in kind), None)
  if peak is None or dtype != jnp.bfloat16:
    logging.warning("No peak FLOP/s known for %s at %s: MFU is not logged; set "
                    "config.peak_flops_per_device to log it.", kind or device.platform,
                    dtype.name)
    return None
  return peak


_MEASURED: dict[str, float] = {}
