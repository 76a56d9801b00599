"""Text towers: a bidirectional encoder (BERT-like) and a causal decoder with cross-attention."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from medjax import sharding
from medjax.models import layers


class _Embedding(nnx.Module):
  """Token table (vocab, width) plus a learned position table (max_len, width)."""

  def __init__(self, vocab_size: int, width: int, max_len: int, *, dtype, param_dtype,
               rngs: nnx.Rngs):
    self.dtype = dtype
    self.max_len = max_len
    # std 1/sqrt(width): after the final LayerNorm, tied logits then start near unit variance.
    self.tokens = nnx.Embed(
        vocab_size, width, dtype=dtype, param_dtype=param_dtype,
        embedding_init=layers.partitioned(nnx.initializers.normal(width ** -0.5), "vocab", "embed"),
        rngs=rngs)
    pos_init = layers.partitioned(nnx.initializers.normal(0.02), "length", "embed")
    self.positions = nnx.Param(pos_init(rngs.params(), (max_len, width), param_dtype))

  def __call__(self, ids: jax.Array) -> jax.Array:
    length = ids.shape[1]
    if length > self.max_len:
      raise ValueError(f"sequence length {length} exceeds max_len {self.max_len}")
    x = self.tokens(ids) + self.positions[:length].astype(self.dtype)
    return sharding.constrain(x, layers.RESIDUAL)

  def logits(self, states: jax.Array) -> jax.Array:
    """Tied output layer: states [B, T, width] -> float32 logits [B, T, vocab]."""
    table = self.tokens.embedding[...].astype(self.dtype)
    logits = jnp.einsum("btd,vd->btv", states.astype(self.dtype), table,
                        preferred_element_type=jnp.float32)
    return sharding.constrain(logits, ("batch", "act_length", "act_vocab"))


class TextEncoder(nnx.Module):
  """ids [B, T], mask [B, T] -> (states [B, T, width], pooled [B, width] float32).

  Attention only looks at real tokens, so padding never changes the outputs at real positions.
  The pooled vector is the state at position 0, where the tokenizer puts BOS (used as CLS).
  `block` (layers.BlockOptions): pre-LN blocks and a final LayerNorm (medjax's own), or post-LN
  blocks after a LayerNorm of the embeddings (BERT); norm epsilon, MLP activation.
  """

  def __init__(self, vocab_size: int, width: int, depth: int, heads: int, mlp_dim: int,
               max_len: int, *, block: layers.BlockOptions = layers.BlockOptions(),
               dtype=jnp.float32, param_dtype=jnp.float32,
               stack: layers.StackOptions = layers.StackOptions(), rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.embed = _Embedding(vocab_size, width, max_len, **kw)
    self.blocks = layers.Stack(depth, width, heads, mlp_dim, options=stack, block=block, **kw)
    post = block.norm == "post"
    self.norm = None if post else layers.layer_norm(width, eps=block.norm_eps, **kw)
    self.embed_norm = layers.layer_norm(width, eps=block.norm_eps, **kw) if post else None

  def __call__(self, ids: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = self.embed(ids)
    if self.embed_norm is not None:
      x = self.embed_norm(x)
    states = self.blocks(x, layers.padding_mask(mask))
    if self.norm is not None:
      states = self.norm(states)
    return states, states[:, 0].astype(jnp.float32)

  def logits(self, states: jax.Array) -> jax.Array:
    """MLM-style head tied to the token embedding: float32 [B, T, vocab]."""
    return self.embed.logits(states)


class TextDecoder(nnx.Module):
  """ids [B, T], mask [B, T], context [B, S, width] -> float32 logits [B, T, vocab].

  Position t sees tokens <= t (causal) and the whole context (cross-attention); the logit at t
  predicts token t + 1. The context is whatever the caller conditions on, already at the
  decoder's width: image tokens for captioning, encoded text for sentence reconstruction
  (MedMLLM owns one projection per source).
  """

  def __init__(self, vocab_size: int, width: int, depth: int, heads: int, mlp_dim: int,
               max_len: int, *, dtype=jnp.float32, param_dtype=jnp.float32,
               stack: layers.StackOptions = layers.StackOptions(), rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.embed = _Embedding(vocab_size, width, max_len, **kw)
    self.blocks = layers.Stack(depth, width, heads, mlp_dim, causal=True, cross=True, options=stack,
                               **kw)
    self.norm = layers.layer_norm(width, **kw)

  def __call__(self, ids: jax.Array, mask: jax.Array, context: jax.Array,
               context_mask: jax.Array | None = None, at: jax.Array | None = None) -> jax.Array:
    """context_mask [B, S] bool (True = real) hides padded context positions; None = all real.
    `at` (a scalar position): only that position's logits [B, vocab], what step-by-step
    decoding reads; the vocabulary projection of the other positions is skipped."""
    cross_mask = None if context_mask is None else layers.padding_mask(context_mask)
    x = self.embed(ids)
    x = self.norm(self.blocks(x, layers.padding_mask(mask), context.astype(self.embed.dtype),
                              cross_mask))
    if at is not None:
      return self.embed.logits(jax.lax.dynamic_slice_in_dim(x, at, 1, axis=1))[:, 0]
    return self.embed.logits(x)
