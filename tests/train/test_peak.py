"""MFU's denominator: a configured peak, a CPU's measured one shared by the run's devices, an
accelerator's by device kind."""
import types

import jax
import jax.numpy as jnp
import pytest

from medjax.train import peak


def _chip(kind: str, platform: str):
  return types.SimpleNamespace(platform=platform, device_kind=kind, process_index=0)


def test_a_configured_peak_is_taken_as_given():
  assert peak.per_device(5e12, jnp.bfloat16, jax.devices()[:1]) == 5e12


@pytest.mark.parametrize("kind, platform, expected", [
  ("TPU v5 lite", "tpu", 197e12),  # v5e, not v5p's 459e12: the longer name matches first
  ("TPU v5", "tpu", 459e12),
  ("TPU v4", "tpu", 275e12),
  ("NVIDIA H100 PCIe", "gpu", 756e12),
  ("NVIDIA H100 80GB HBM3", "gpu", 989e12),
  ("NVIDIA A100-SXM4-40GB", "gpu", 312e12),
])
def test_an_accelerators_bf16_peak_comes_from_its_device_kind(kind, platform, expected):
  assert peak.per_device(0, jnp.bfloat16, [_chip(kind, platform)]) == expected


def test_no_peak_and_no_mfu_for_an_unknown_chip_or_a_float32_accelerator_run():
  assert peak.per_device(0, jnp.bfloat16, [_chip("NVIDIA T4", "gpu")]) is None
  assert peak.per_device(0, jnp.float32, [_chip("TPU v4", "tpu")]) is None


def test_a_cpus_measured_peak_is_split_among_the_runs_devices():
  cpus = jax.devices("cpu")
  assert len(cpus) == 8  # tests/conftest.py's fake devices
  whole = peak.per_device(0, jnp.float32, cpus[:1])
  assert 1e9 < whole < 1e14  # a measured matmul rate, not a constant's default
  # One measurement per dtype: the 8-device run's figure is the same machine's, shared.
  assert peak.per_device(0, jnp.float32, cpus) == pytest.approx(whole / 8)
  assert peak.per_device(0, jnp.float32, cpus[:2]) == pytest.approx(whole / 2)
