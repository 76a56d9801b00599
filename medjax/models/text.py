"""Text towers: a bidirectional encoder (BERT-like) and a causal decoder with cross-attention."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from medjax import sharding
from medjax.models import layers, matmul


class TiedLogits(struct.PyTreeNode):
  """Float32 logits [..., vocab] of `states` [..., width] under the tied output layer (`table`
  [vocab, width]), not computed until asked. `full()` computes them all; a cross-entropy over
  the vocabulary (objectives/_common.token_cross_entropy) computes `chunk` positions at a time
  when chunk > 0 (model.logits_chunk), so no [B, T, vocab] array and gradient are held at once.
  Indexing slices the positions (`logits[:, :-1]`); numpy reads it as the full array."""
  states: jax.Array
  table: jax.Array
  chunk: int = struct.field(pytree_node=False, default=0)

  def project(self, states: jax.Array) -> jax.Array:
    """states [..., width] -> float32 logits [..., vocab], multiplied in the states' dtype."""
    logits = matmul.matmul(states, self.table, transpose_w=True)
    if logits.ndim == 3:
      logits = sharding.constrain(logits, ("batch", "act_length", "act_vocab"))
    return logits

  def full(self) -> jax.Array:
    return self.project(self.states)

  def __getitem__(self, index) -> TiedLogits:
    return self.replace(states=self.states[index])

  @property
  def shape(self) -> tuple[int, ...]:
    return (*self.states.shape[:-1], self.table.shape[0])

  @property
  def dtype(self):
    return jnp.dtype(jnp.float32)

  def __array__(self, dtype=None, copy=None):
    return np.asarray(self.full(), dtype)


class _Embedding(nnx.Module):
  """Token table (vocab, width) plus a learned position table (max_len, width). The embedded
  tokens start the float32 residual stream; the tied logits multiply in the compute dtype."""

  def __init__(self, vocab_size: int, width: int, max_len: int, *, dtype, param_dtype,
               rngs: nnx.Rngs):
    self.dtype = dtype
    self.max_len = max_len
    # std 1/sqrt(width): after the final LayerNorm, tied logits then start near unit variance.
    self.tokens = nnx.Embed(
        vocab_size, width, dtype=param_dtype, param_dtype=param_dtype,
        embedding_init=layers.partitioned(nnx.initializers.normal(width ** -0.5), "vocab", "embed"),
        rngs=rngs)
    pos_init = layers.partitioned(nnx.initializers.normal(0.02), "length", "embed")
    self.positions = nnx.Param(pos_init(rngs.params(), (max_len, width), param_dtype))

  def __call__(self, ids: jax.Array) -> jax.Array:
    length = ids.shape[1]
    if length > self.max_len:
      raise ValueError(f"sequence length {length} exceeds max_len {self.max_len}")
    x = self.tokens(ids) + self.positions[:length]
    return sharding.constrain(x, layers.RESIDUAL)

  def logits(self, states: jax.Array) -> TiedLogits:
    """Tied output layer: states [B, T, width] -> float32 logits [B, T, vocab] (lazily)."""
    return TiedLogits(states.astype(self.dtype), self.tokens.embedding[...])


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

  def logits(self, states: jax.Array) -> TiedLogits:
    """MLM-style head tied to the token embedding: float32 [B, T, vocab] (lazily)."""
    return self.embed.logits(states)


class TextDecoder(nnx.Module):
  """ids [B, T], mask [B, T], context [B, S, width] -> float32 logits [B, T, vocab] (TiedLogits).

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
    `at` (a scalar position): only that position's logits [B, vocab] (an array), what
    step-by-step decoding reads; the vocabulary projection of the other positions is skipped."""
    cross_mask = None if context_mask is None else layers.padding_mask(context_mask)
    x = self.embed(ids)
    x = self.norm(self.blocks(x, layers.padding_mask(mask), context, cross_mask))
    if at is not None:
      return self.embed.logits(jax.lax.dynamic_slice_in_dim(x, at, 1, axis=1))[:, 0].full()
    return self.embed.logits(x)
