"""The compute dtype of the model (`model.dtype`), chosen per backend when it is "auto".

The policy every tower follows: parameters and optimizer state are float32; matmul inputs are
cast to the compute dtype and accumulate in float32 (`preferred_element_type`), the residual
stream, layer-norm statistics, softmax and losses stay float32. A low-precision compute dtype
only pays where the hardware multiplies it natively: TPUs, NVIDIA GPUs from Ampere (compute
capability 8.0) on, and CPUs with AVX512_BF16 or AMX-BF16 instructions. Elsewhere (e.g. an
AVX2-only CPU) bfloat16 is emulated and much slower than float32, so "auto" keeps float32.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from absl import logging

from medjax import paths

CHOICES = ("auto", "float32", "bfloat16")  # model.dtype
# /proc/cpuinfo flags of x86 instructions that multiply bfloat16 natively.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
  """The instruction-set flags of this machine's CPU (empty where /proc/cpuinfo is absent)."""
  path = paths.path(cpuinfo)
  if not path.is_file():
    return frozenset()
  for line in path.read_text().splitlines():
    if line.startswith("flags"):
      return frozenset(line.partition(":")[2].split())
  return frozenset()


def fast_bfloat16(device, cpu_flag_set: frozenset[str] | None = None) -> tuple[bool, str]:
  """(whether `device` (a jax.Device) multiplies bfloat16 natively, the reason in a few
  words). `cpu_flag_set`: the CPU's flags (default: this machine's, `cpu_flags()`)."""
  if device.platform == "tpu":
    return True, "TPU"
  if device.platform == "gpu":
    capability = getattr(device, "compute_capability", "0")
    major = int(str(capability).split(".")[0] or 0)
    return major >= 8, f"GPU compute capability {capability}"
  if device.platform == "cpu":
    flags = cpu_flags() if cpu_flag_set is None else cpu_flag_set
    native = sorted(set(CPU_BF16_FLAGS) & flags)
    return bool(native), "CPU with " + ("/".join(native) if native else "no native bf16")
  return False, f"platform {device.platform}"


def compute_dtype(name: str, device: jax.Device | None = None) -> jnp.dtype:
  """`model.dtype` -> the dtype matmuls take their inputs in. "auto" asks `fast_bfloat16` about
  `device` (default: the first device; call it after jax.distributed.initialize)."""
  if name not in CHOICES:
    raise ValueError(f"model.dtype = {name!r}: one of {list(CHOICES)}")
  if name != "auto":
    return jnp.dtype(name)
  device = jax.devices()[0] if device is None else device
  key = (device.platform, getattr(device, "device_kind", ""))
  if key not in _CHOSEN:  # decided (and logged) once per kind of device
    fast, why = fast_bfloat16(device)
    _CHOSEN[key] = jnp.dtype(jnp.bfloat16 if fast else jnp.float32)
    logging.info("model.dtype=auto: %s on %s %s (%s).", _CHOSEN[key].name, *key, why)
  return _CHOSEN[key]


_CHOSEN: dict[tuple[str, str], jnp.dtype] = {}
