"""Transformer pieces shared by the towers: MLP, attention, pre-LayerNorm block.

Every parameter carries logical axis names (see ``medjax.sharding.LOGICAL_AXIS_RULES``), so the
trainer can derive its placement from ``nnx.get_partition_spec`` alone.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from medjax import sharding

RESIDUAL = ("batch", "act_length", "act_embed")


@dataclasses.dataclass(frozen=True)
class StackOptions:
  """How every tower applies its blocks (model.remat, model.scan_layers).

  remat: recompute a block's activations in the backward pass instead of storing them (bounds
  activation memory by one block). scan: one scanned loop body for all blocks (compile time of
  one block at any depth); False unrolls them into the graph: the same numbers and parameters,
  and what FLOP counting needs, since XLA's cost analysis counts a loop body once."""
  remat: bool = False
  scan: bool = True


def partitioned(initializer, *axes: str):
  """An initializer whose Param records the logical names of its dimensions."""
  return nnx.with_partitioning(initializer, axes)


def dense(in_features: int | Sequence[int], out_features: int | Sequence[int],
          in_axes: tuple[str, ...], out_axes: tuple[str, ...], *, dtype, param_dtype,
          rngs: nnx.Rngs) -> nnx.LinearGeneral:
  """Linear map over the trailing ``in_features`` dims, with bias over ``out_features``."""
  in_features = (in_features,) if isinstance(in_features, int) else tuple(in_features)
  # LinearGeneral flattens multi-dim kernels before initialising, so fan-in/out stay correct
  # for the (embed, heads, kv) and (heads, kv, embed) attention kernels.
  return nnx.LinearGeneral(
      in_features, out_features, axis=tuple(range(-len(in_features), 0)),
      kernel_init=partitioned(nnx.initializers.xavier_uniform(), *in_axes, *out_axes),
      bias_init=partitioned(nnx.initializers.zeros_init(), *out_axes),
      dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def layer_norm(width: int, *, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(
      width, epsilon=1e-6, dtype=dtype, param_dtype=param_dtype,
      scale_init=partitioned(nnx.initializers.ones_init(), "embed"),
      bias_init=partitioned(nnx.initializers.zeros_init(), "embed"), rngs=rngs)


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  """Unit vectors along `axis`; an all-zero one stays zero (cosine 0 with everything)."""
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=axis, keepdims=True) + 1e-12)


def padding_mask(mask: jax.Array) -> jax.Array:
  """[B, S] bool (True = real token) -> attention mask [B, 1, 1, S] over keys."""
  return mask.astype(bool)[:, None, None, :]


class Mlp(nnx.Module):
  """Two-layer GELU MLP."""

  def __init__(self, width: int, mlp_dim: int, *, dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.up = dense(width, mlp_dim, ("embed",), ("mlp",), **kw)
    self.down = dense(mlp_dim, width, ("mlp",), ("embed",), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = nnx.gelu(self.up(x))
    h = sharding.constrain(h, ("batch", "act_length", "act_mlp"))
    return self.down(h)


class Attention(nnx.Module):
  """Multi-head attention: self-attention, or cross-attention when given a ``context``."""

  def __init__(self, width: int, heads: int, *, dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    if width % heads:
      raise ValueError(f"width {width} is not divisible by heads {heads}")
    head_dim = width // heads
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.query = dense(width, (heads, head_dim), ("embed",), ("heads", "kv"), **kw)
    self.key = dense(width, (heads, head_dim), ("embed",), ("heads", "kv"), **kw)
    self.value = dense(width, (heads, head_dim), ("embed",), ("heads", "kv"), **kw)
    self.out = dense((heads, head_dim), width, ("heads", "kv"), ("embed",), **kw)

  def __call__(self, x: jax.Array, context: jax.Array | None = None, *,
               mask: jax.Array | None = None, is_causal: bool = False) -> jax.Array:
    """x [B, T, D], context [B, S, D] (defaults to x), mask broadcastable to [B, heads, T, S]."""
    context = x if context is None else context
    heads = ("batch", "act_length", "act_heads", None)
    q = sharding.constrain(self.query(x), heads)
    k = sharding.constrain(self.key(context), heads)
    v = sharding.constrain(self.value(context), heads)
    out = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=is_causal)
    return self.out(out)


class Block(nnx.Module):
  """Pre-LayerNorm transformer block: self-attention, optional cross-attention, MLP."""

  def __init__(self, width: int, heads: int, mlp_dim: int, *, causal: bool = False,
               cross: bool = False, dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.causal = causal
    self.norm_attn = layer_norm(width, **kw)
    self.attn = Attention(width, heads, **kw)
    self.norm_cross = layer_norm(width, **kw) if cross else None
    self.cross = Attention(width, heads, **kw) if cross else None
    self.norm_mlp = layer_norm(width, **kw)
    self.mlp = Mlp(width, mlp_dim, **kw)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None,
               context: jax.Array | None = None,
               context_mask: jax.Array | None = None) -> jax.Array:
    """x [B, T, D]; mask: self-attention mask ([B, 1, 1, T]); context [B, S, D] if cross, with
    context_mask ([B, 1, 1, S]) when it has padding (e.g. text states)."""
    if (self.cross is None) != (context is None):
      raise ValueError("a context must be given exactly when the block has cross-attention")
    x = x + self.attn(self.norm_attn(x), mask=mask, is_causal=self.causal)
    if self.cross is not None:
      x = x + self.cross(self.norm_cross(x), context, mask=context_mask)
    x = x + self.mlp(self.norm_mlp(x))
    return sharding.constrain(x, RESIDUAL)


class Stack(nnx.Module):
  """``depth`` identical blocks, parameters stacked on a leading ``layers`` axis, applied with a
  scan: the traced graph, init time and compile time stay those of one block at any depth.

  `options` (StackOptions): remat, and scanned or unrolled.
  """

  def __init__(self, depth: int, width: int, heads: int, mlp_dim: int, *, causal: bool = False,
               cross: bool = False, options: StackOptions = StackOptions(), dtype=jnp.float32,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.depth = depth
    self.options = options

    @nnx.split_rngs(splits=depth)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def create(rngs):
      return Block(width, heads, mlp_dim, causal=causal, cross=cross, dtype=dtype,
                   param_dtype=param_dtype, rngs=rngs)

    self.layers = create(rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None,
               context: jax.Array | None = None,
               context_mask: jax.Array | None = None) -> jax.Array:
    def body(x, block, mask, context, context_mask):
      return block(x, mask, context, context_mask)

    body = nnx.remat(body) if self.options.remat else body
    scan = nnx.scan(body, in_axes=(nnx.Carry, 0, None, None, None), out_axes=nnx.Carry,
                    unroll=1 if self.options.scan else True)
    return scan(x, self.layers, mask, context, context_mask)
