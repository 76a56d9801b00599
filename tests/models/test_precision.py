"""The compute dtype per backend (model.dtype="auto") and the mixed-precision policy."""
import types

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from medjax.models import layers, precision

AMX_CPU = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
AVX2_CPU = frozenset({"avx2", "fma", "f16c"})


def _device(platform, **attrs):
  return types.SimpleNamespace(platform=platform, device_kind=f"fake {platform}", **attrs)


@pytest.mark.parametrize("device, flags, fast", [
    (_device("tpu"), None, True),
    (_device("gpu", compute_capability="9.0"), None, True),  # H100
    (_device("gpu", compute_capability="8.0"), None, True),  # A100
    (_device("gpu", compute_capability="7.0"), None, False),  # V100: no bf16 tensor cores
    (_device("cpu"), AMX_CPU, True),
    (_device("cpu"), frozenset({"avx512f", "avx512_bf16"}), True),
    (_device("cpu"), AVX2_CPU, False),  # bf16 emulated, ~20x slower than f32
    (_device("METAL"), None, False),
])
def test_fast_bfloat16_per_backend(device, flags, fast):
  got, why = precision.fast_bfloat16(device, flags)
  assert got == fast and why


def test_cpu_flags_from_cpuinfo(tmp_path):
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16 amx_bf16\n\n"
                     "processor\t: 1\nflags\t\t: fpu avx2 avx512_bf16 amx_bf16\n")
  assert precision.cpu_flags(str(cpuinfo)) == {"fpu", "avx2", "avx512_bf16", "amx_bf16"}
  assert precision.cpu_flags(str(tmp_path / "absent")) == frozenset()


def test_compute_dtype_auto_follows_the_device_explicit_names_do_not(monkeypatch):
  monkeypatch.setattr(precision, "cpu_flags", lambda: AVX2_CPU)
  assert precision.compute_dtype("auto", _device("cpu")) == jnp.float32
  assert precision.compute_dtype("auto", _device("tpu")) == jnp.bfloat16
  assert precision.compute_dtype("bfloat16", _device("cpu")) == jnp.bfloat16
  assert precision.compute_dtype("float32", _device("tpu")) == jnp.float32
  with pytest.raises(ValueError, match="model.dtype"):
    precision.compute_dtype("float16")


def _dots(jaxpr):
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      yield eqn
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from _dots(sub)


def test_bf16_block_multiplies_in_bf16_accumulates_and_keeps_the_residual_in_float32():
  block = layers.Block(32, 2, 64, cross=True, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  x, context = jnp.ones((2, 5, 32)), jnp.ones((2, 3, 32))
  closed = jax.make_jaxpr(lambda x, c: block(x, context=c))(x, context)
  dots = list(_dots(closed.jaxpr))
  assert len(dots) == 14  # q, k, v, out and the two attention products, twice; the MLP's two
  for eqn in dots:
    assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16] * 2, eqn
    assert eqn.params["preferred_element_type"] == jnp.float32, eqn
  assert closed.out_avals[0].dtype == jnp.float32
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(block, nnx.Param)))
