"""Transformer pieces shared by the towers: MLP, attention, transformer block.

Every parameter carries logical axis names (see ``medjax.sharding.LOGICAL_AXIS_RULES``), so the
trainer can derive its placement from ``nnx.get_partition_spec`` alone.

Precision (medjax/models/precision.py): `dtype` is the compute dtype of the matmul inputs;
every matmul accumulates and returns float32, and the residual stream stays float32. Layer
norms compute their statistics in float32 and hand the compute dtype to the next matmul.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from medjax import sharding
from medjax.configs.resolve import MLP_ACTS, NORMS
from medjax.models import matmul

RESIDUAL = ("batch", "act_length", "act_embed")


# model.remat: what a block keeps for the backward pass; the rest is recomputed there.
# "dots": the outputs of the dense matmuls (no batch dims), recomputing attention scores,
# softmax, norms and GELU: most of the memory saved for ~1/4 of the recompute of "full",
# which keeps only each block's input (activation memory of one block per tower).
REMAT_POLICIES = {
    "none": None,
    "dots": jax.checkpoint_policies.save_only_these_names(matmul.NAME),
    "full": jax.checkpoint_policies.nothing_saveable,
}


@dataclasses.dataclass(frozen=True)
class StackOptions:
  """How every tower applies its blocks (model.remat, model.scan_layers).

  remat: a name in REMAT_POLICIES. scan: one scanned loop body for all blocks (compile time of
  one block at any depth); False unrolls them into the graph: the same numbers and parameters."""
  remat: str = "none"
  scan: bool = False

  def __post_init__(self):
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"model.remat = {self.remat!r}: one of {list(REMAT_POLICIES)}")


@dataclasses.dataclass(frozen=True)
class BlockOptions:
  """How a tower's blocks are built (model.image.* / model.text.*, medjax/configs/base.py). The
  defaults are medjax's own blocks; the others hold towers imported from Hugging Face exactly.

  norm: "pre" (x + f(LN(x)), medjax, ViT, DINOv2) or "post" (LN(x + f(x)), BERT).
  norm_eps: the LayerNorms' epsilon. mlp_act: "gelu_tanh" (tanh approximation) or "gelu"
  (exact erf). layer_scale: 0 = none, else a learned per-channel scale on every residual branch,
  initialised to this value (CaiT, DINOv2)."""
  norm: str = "pre"
  norm_eps: float = 1e-6
  mlp_act: str = "gelu_tanh"
  layer_scale: float = 0.0


def partitioned(initializer, *axes: str):
  """An initializer whose Param records the logical names of its dimensions."""
  return nnx.with_partitioning(initializer, axes)


def dense(in_features: int | Sequence[int], out_features: int | Sequence[int],
          in_axes: tuple[str, ...], out_axes: tuple[str, ...], *, dtype, param_dtype,
          rngs: nnx.Rngs, kernel_init=None, use_bias: bool = True) -> nnx.LinearGeneral:
  """Linear map over the trailing ``in_features`` dims, with bias over ``out_features``: inputs
  in `dtype`, float32 params, accumulated and returned in float32 (medjax/models/matmul.py).
  `kernel_init` defaults to Xavier-uniform."""
  in_features = (in_features,) if isinstance(in_features, int) else tuple(in_features)
  kernel_init = kernel_init or nnx.initializers.xavier_uniform()
  # LinearGeneral flattens multi-dim kernels before initialising, so fan-in/out stay correct
  # for the (embed, heads, kv) and (heads, kv, embed) attention kernels.
  return nnx.LinearGeneral(
      in_features, out_features, axis=tuple(range(-len(in_features), 0)), use_bias=use_bias,
      kernel_init=partitioned(kernel_init, *in_axes, *out_axes),
      bias_init=partitioned(nnx.initializers.zeros_init(), *out_axes),
      dtype=dtype, param_dtype=param_dtype, dot_general=matmul.dot_general,
      promote_dtype=matmul.cast_inputs, rngs=rngs)


def layer_norm(width: int, *, eps: float = 1e-6, dtype, param_dtype,
               rngs: nnx.Rngs) -> nnx.LayerNorm:
  """Statistics in float32 (Flax promotes them), the output in `dtype`: a matmul's input."""
  return nnx.LayerNorm(
      width, epsilon=eps, dtype=dtype, param_dtype=param_dtype,
      scale_init=partitioned(nnx.initializers.ones_init(), "embed"),
      bias_init=partitioned(nnx.initializers.zeros_init(), "embed"), rngs=rngs)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None,
              is_causal: bool = False) -> jax.Array:
  """Softmax attention of q [B, T, H, K] over k, v [B, S, H, K] -> [B, T, H, K] in q's dtype.
  Both products take q's dtype and accumulate in float32; scores and softmax are float32.
  `mask` broadcastable to [B, H, T, S], True = attend.

  Heads are moved in front of the positions first, so both products are batched over (B, H)
  with the contracted and the kept dims last: on XLA's CPU backend this runs the step's
  attention 1.3-2x faster than jax.nn.dot_product_attention, whose einsums leave XLA to insert
  transposes around every product of the backward pass (benchmarks/attention_forms.py)."""
  q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
  scores = jnp.einsum("bhtk,bhsk->bhts", q, k, preferred_element_type=jnp.float32)
  scores = scores * q.shape[-1] ** -0.5
  if is_causal:
    causal = jnp.tril(jnp.ones(scores.shape[-2:], bool))
    mask = causal if mask is None else mask & causal
  if mask is not None:
    # A finite floor: a query with no key to attend to gets uniform weights, not NaN.
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bhts,bhsk->bhtk", probs, v, preferred_element_type=jnp.float32)
  return out.astype(q.dtype).transpose(0, 2, 1, 3)


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  """Unit vectors along `axis`; an all-zero one stays zero (cosine 0 with everything)."""
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=axis, keepdims=True) + 1e-12)


def padding_mask(mask: jax.Array) -> jax.Array:
  """[B, S] bool (True = real token) -> attention mask [B, 1, 1, S] over keys."""
  return mask.astype(bool)[:, None, None, :]


class Mlp(nnx.Module):
  """Two-layer GELU MLP; `act` "gelu_tanh" (tanh approximation) or "gelu" (exact erf), run on
  the float32 output of the first matmul."""

  def __init__(self, width: int, mlp_dim: int, *, act: str = "gelu_tanh", dtype=jnp.float32,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    if act not in MLP_ACTS:
      raise ValueError(f"MLP activation {act!r}: expected one of {MLP_ACTS}")
    self.approximate = act == "gelu_tanh"
    self.up = dense(width, mlp_dim, ("embed",), ("mlp",), **kw)
    self.down = dense(mlp_dim, width, ("mlp",), ("embed",), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = nnx.gelu(self.up(x), approximate=self.approximate)
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
    self.dtype = dtype
    self.query = dense(width, (heads, head_dim), ("embed",), ("heads", "kv"), **kw)
    self.key = dense(width, (heads, head_dim), ("embed",), ("heads", "kv"), **kw)
    self.value = dense(width, (heads, head_dim), ("embed",), ("heads", "kv"), **kw)
    self.out = dense((heads, head_dim), width, ("heads", "kv"), ("embed",), **kw)

  def __call__(self, x: jax.Array, context: jax.Array | None = None, *,
               mask: jax.Array | None = None, is_causal: bool = False) -> jax.Array:
    """x [B, T, D], context [B, S, D] (defaults to x), mask broadcastable to [B, heads, T, S]."""
    context = x if context is None else context
    heads = ("batch", "act_length", "act_heads", None)
    q, k, v = (sharding.constrain(proj(y).astype(self.dtype), heads)
               for proj, y in ((self.query, x), (self.key, context), (self.value, context)))
    return self.out(attention(q, k, v, mask, is_causal))


class Block(nnx.Module):
  """Transformer block: self-attention, optional cross-attention, MLP; pre-LayerNorm unless
  `options` say otherwise (BlockOptions)."""

  def __init__(self, width: int, heads: int, mlp_dim: int, *, causal: bool = False,
               cross: bool = False, options: BlockOptions = BlockOptions(), dtype=jnp.float32,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    norm = lambda: layer_norm(width, eps=options.norm_eps, **kw)
    if options.norm not in NORMS:
      raise ValueError(f"block norm {options.norm!r}: expected one of {NORMS}")
    self.causal = causal
    self.post_norm = options.norm == "post"
    self.norm_attn = norm()
    self.attn = Attention(width, heads, **kw)
    self.norm_cross = norm() if cross else None
    self.cross = Attention(width, heads, **kw) if cross else None
    self.norm_mlp = norm()
    self.mlp = Mlp(width, mlp_dim, act=options.mlp_act, **kw)
    # LayerScale: one learned scale per channel and residual branch (only when asked for, so
    # medjax's own towers keep their parameters and initial values).
    scale = lambda: (nnx.Param(partitioned(nnx.initializers.constant(options.layer_scale),
                                           "embed")(rngs.params(), (width,), param_dtype))
                     if options.layer_scale else None)
    self.scale_attn = scale()
    self.scale_cross = scale() if cross else None
    self.scale_mlp = scale()

  def _residual(self, x, branch, norm, scale):
    """x + branch, the LayerNorm before the branch (pre) or after the sum (post)."""
    if self.post_norm:
      return norm(x + _scaled(branch(x), scale))
    return x + _scaled(branch(norm(x)), scale)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None,
               context: jax.Array | None = None,
               context_mask: jax.Array | None = None) -> jax.Array:
    """x [B, T, D]; mask: self-attention mask ([B, 1, 1, T]); context [B, S, D] if cross, with
    context_mask ([B, 1, 1, S]) when it has padding (e.g. text states)."""
    if (self.cross is None) != (context is None):
      raise ValueError("a context must be given exactly when the block has cross-attention")
    x = self._residual(x, lambda h: self.attn(h, mask=mask, is_causal=self.causal),
                       self.norm_attn, self.scale_attn)
    if self.cross is not None:
      x = self._residual(x, lambda h: self.cross(h, context, mask=context_mask),
                         self.norm_cross, self.scale_cross)
    x = self._residual(x, self.mlp, self.norm_mlp, self.scale_mlp)
    return sharding.constrain(x, RESIDUAL)


def _scaled(x: jax.Array, scale: nnx.Param | None) -> jax.Array:
  return x if scale is None else x * scale[...].astype(x.dtype)


class Stack(nnx.Module):
  """``depth`` identical blocks, parameters stacked on a leading ``layers`` axis, applied with a
  scan: the traced graph, init time and compile time stay those of one block at any depth.

  `options` (StackOptions): the remat policy, and scanned or unrolled; `block` (BlockOptions):
  how each block is built.
  """

  def __init__(self, depth: int, width: int, heads: int, mlp_dim: int, *, causal: bool = False,
               cross: bool = False, options: StackOptions = StackOptions(),
               block: BlockOptions = BlockOptions(), dtype=jnp.float32,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.depth = depth
    self.options = options

    @nnx.split_rngs(splits=depth)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def create(rngs):
      return Block(width, heads, mlp_dim, causal=causal, cross=cross, options=block,
                   dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    self.layers = create(rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None,
               context: jax.Array | None = None,
               context_mask: jax.Array | None = None) -> jax.Array:
    def body(x, block, mask, context, context_mask):
      return block(x, mask, context, context_mask)

    if self.options.remat != "none":
      # Inside a scanned loop XLA cannot merge the recompute into the forward pass, and CSE
      # barriers would only cost speed; unrolled, it would (and remat would save nothing).
      body = nnx.remat(body, policy=REMAT_POLICIES[self.options.remat],
                       prevent_cse=not self.options.scan)
    scan = nnx.scan(body, in_axes=(nnx.Carry, 0, None, None, None), out_axes=nnx.Carry,
                    unroll=1 if self.options.scan else True)
    return scan(x, self.layers, mask, context, context_mask)
