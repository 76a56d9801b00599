"""The one matrix multiplication of every dense layer and of the tied vocabulary head.

`matmul(x, w)`: inputs in the compute dtype (x's), float32 accumulation and output, float32
parameters cast to the compute dtype inside, and a hand-written backward pass that
(a) returns the parameter's gradient in the parameter's dtype, accumulated in float32 and never
rounded to bfloat16 (the default autodiff of `x.astype(bf16) @ w.astype(bf16)` rounds it), and
(b) in bfloat16 hands XLA the weight-gradient product in its canonical form. Autodiff writes it
as x^T @ g with x contracted over its first dimension; XLA's CPU backend then converts both
operands to float32 and runs its float32 kernel instead of the bf16 (AMX) one: 4x slower
(benchmarks/matmul_forms.py). Transposing x in memory first costs one copy of x; it is done
only where it pays: on the CPU backend, and only for an unpartitioned program. The copy goes
through a 1-D array, which a sharded x cannot keep its sharding through: under a mesh XLA
would gather the whole global batch's activations (and the [tokens, 32k] logits gradient) onto
every device, ~17 GB per device for medmllm_l, where TPUs and GPUs have no such kernel issue.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.ad_checkpoint import checkpoint_name

NAME = "matmul"  # checkpoint_name of every `matmul` output

_CANONICAL = (((1,), (0,)), ((), ()))  # [M, K] @ [K, N]
_RHS_T = (((1,), (1,)), ((), ()))  # [M, K] @ [N, K]^T
_LHS_T = (((0,), (0,)), ((), ()))  # [K, M]^T @ [K, N]


def transposed(x: jax.Array) -> jax.Array:
  """x [M, N] -> x.T [N, M] laid out row-major in memory. A plain transpose becomes a layout
  change in XLA (no copy), which the bf16 dot kernel does not take; a 1-D array has a single
  layout, so going through one behind an optimization barrier forces the copy."""
  return lax.optimization_barrier(x.T.reshape(-1)).reshape(x.shape[::-1])


def _copy_transposes() -> bool:
  """Whether the weight gradient's operand is transposed in memory (see the module docstring):
  a CPU program on one device."""
  mesh = jax.sharding.get_abstract_mesh()
  return jax.default_backend() == "cpu" and (mesh.empty or mesh.size == 1)


def _dot(a, b, dims):
  return lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul2d(x: jax.Array, w: jax.Array, transpose_w: bool) -> jax.Array:
  return _dot(x, w.astype(x.dtype), _RHS_T if transpose_w else _CANONICAL)


def _forward(x, w, transpose_w):
  return _matmul2d(x, w, transpose_w), (x, w)


def _backward(transpose_w, residuals, g):
  x, w = residuals
  g = g.astype(x.dtype)
  wc = w.astype(x.dtype)
  # float32: XLA's own layout handling is as fast.
  low = x.dtype != jnp.float32 and _copy_transposes()
  if transpose_w:  # y = x @ w^T, w [N, K]: dw = g^T x [N, K]
    dx = _dot(g, wc, _CANONICAL)
    dw = _dot(transposed(g), x, _CANONICAL) if low else _dot(g, x, _LHS_T)
  else:  # y = x @ w, w [K, N]: dw = x^T g [K, N]
    dx = _dot(g, wc, _RHS_T)
    dw = _dot(transposed(x), g, _CANONICAL) if low else _dot(x, g, _LHS_T)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_matmul2d.defvjp(_forward, _backward)


def matmul(x: jax.Array, w: jax.Array, contract: int = 1, transpose_w: bool = False):
  """x [..., K1..Kc] (compute dtype) times w [K1..Kc, N...] (any float dtype; or w [N, K] with
  transpose_w) -> float32 [..., N...], contracting x's trailing `contract` dims."""
  batch = x.shape[:x.ndim - contract]
  k = math.prod(x.shape[x.ndim - contract:])
  if transpose_w:
    out = w.shape[:1]
    w2 = w.reshape(w.shape[0], k)
  else:
    out = w.shape[contract:]
    w2 = w.reshape(k, math.prod(out))
  y = _matmul2d(x.reshape(math.prod(batch), k), w2, transpose_w)
  # Named for the remat policy "dots" (medjax/models/layers.py): XLA's dot_general inside a
  # custom_vjp is invisible to jax.checkpoint_policies.dots_with_no_batch_dims_saveable.
  return checkpoint_name(y.reshape(*batch, *out), NAME)


def dot_general(inputs, kernel, dimension_numbers, precision=None, preferred_element_type=None,
                out_sharding=None):
  """`matmul` behind flax's `dot_general` hook (nnx.LinearGeneral): contracts the trailing dims
  of `inputs` with the leading dims of `kernel`, no batch dims; always float32 out."""
  del precision, preferred_element_type, out_sharding
  (lhs, rhs), (lhs_batch, _) = dimension_numbers
  n = len(lhs)
  if lhs_batch or tuple(lhs) != tuple(range(inputs.ndim - n, inputs.ndim)) or tuple(rhs) != tuple(
      range(n)):
    raise ValueError(f"matmul contracts trailing input dims with leading kernel dims, got "
                     f"{dimension_numbers}")
  return matmul(inputs, kernel, contract=n)


def cast_inputs(args, *, dtype=None, inexact=True):
  """flax's `promote_dtype` hook: only the inputs take the compute dtype; kernel and bias stay
  in the parameter dtype (`matmul` casts the kernel itself, the bias adds in float32)."""
  del inexact
  inputs, *rest = args
  return (inputs if dtype is None else inputs.astype(dtype), *rest)
