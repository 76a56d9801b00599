"""Measures this machine's matmul peak (FLOP/s per device): the denominator of every MFU here.

  python -m benchmarks.peak_flops          # prints JSON

Two figures: f32 x f32 -> f32, and bf16 x bf16 -> f32 accumulate (what bf16 models run). The
timing is the trainer's own (medjax/train/peak.py), so benchmarks and logged MFU agree.
"""
import json

import jax
import jax.numpy as jnp

from medjax.train.peak import matmul_peak


def measure() -> dict:
  return dict(device=jax.devices()[0].device_kind,
              f32_flops=matmul_peak(dtype=jnp.float32),
              bf16_in_f32_acc_flops=matmul_peak(dtype=jnp.bfloat16))


if __name__ == "__main__":
  print(json.dumps(measure(), indent=2))
