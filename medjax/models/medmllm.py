"""Med-MLLM: ViT image tower + text encoder + text decoder + projection heads."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from medjax.models import layers
from medjax.models.text import TextDecoder, TextEncoder
from medjax.models.vit import ViT


def param_count(state) -> int:
  """Number of scalars in a params pytree (arrays, abstract shapes, nnx.State or pure dict)."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(state))


def _scalar(value: float, rngs: nnx.Rngs) -> nnx.Param:
  init = layers.partitioned(nnx.initializers.constant(value))
  return nnx.Param(init(rngs.params(), (), jnp.float32))


def _l2_normalize(x: jax.Array) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-12)


class MedMLLM(nnx.Module):
  """The full model, built from the ``model`` sub-config (documented in configs/base.py):
  dtype, remat, proj_dim, image (width, depth, heads, mlp_dim, patch_size, channels), text
  (vocab_size, width, depth, heads, mlp_dim, max_len) and decoder (width, depth, heads, mlp_dim,
  max_len; depth 0 = no decoder; it shares the text vocabulary).

  ``__call__`` serves the paired image-text objective; other objectives call the tower methods
  (encode_image, encode_text, decode, embed_image, embed_text) directly.
  """

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    kw = dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.float32, rngs=rngs)
    tower = dict(kw, remat=cfg.remat)
    im, tx, de = cfg.image, cfg.text, cfg.decoder
    self.image = ViT(im.width, im.depth, im.heads, im.mlp_dim, im.patch_size, im.channels,
                     **tower)
    self.text = TextEncoder(tx.vocab_size, tx.width, tx.depth, tx.heads, tx.mlp_dim, tx.max_len,
                            **tower)
    self.decoder = (TextDecoder(tx.vocab_size, de.width, de.depth, de.heads, de.mlp_dim,
                                de.max_len, image_width=im.width, **tower)
                    if de.depth > 0 else None)
    self.image_head = self._head(im.width, cfg.proj_dim, **kw)
    self.text_head = self._head(tx.width, cfg.proj_dim, **kw)
    # SigLIP initialisation: logits = scale * cos + bias with scale 10 and bias -10 start the
    # sigmoid loss near the all-negative prior instead of paying a large initial loss.
    self.logit_scale = _scalar(math.log(10.0), rngs)
    self.logit_bias = _scalar(-10.0, rngs)

  @staticmethod
  def _head(width: int, proj_dim: int, **kw) -> nnx.Einsum:
    return nnx.Einsum(
        "...d,dp->...p", (width, proj_dim),
        kernel_init=layers.partitioned(nnx.initializers.lecun_normal(), "embed", "proj"), **kw)

  def encode_image(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """images [B, H, W, C] -> (tokens [B, N, width] in the compute dtype, pooled float32)."""
    return self.image(images)

  def encode_text(self, ids: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """ids [B, T] int32, mask [B, T] bool -> (states [B, T, width], pooled float32)."""
    return self.text(ids, mask)

  def decode(self, ids: jax.Array, mask: jax.Array, image_tokens: jax.Array) -> jax.Array:
    """Next-token logits [B, T, vocab] float32, conditioned on the image tokens."""
    if self.decoder is None:
      raise ValueError("This MedMLLM has no text decoder (model.decoder.depth == 0).")
    return self.decoder(ids, mask, image_tokens)

  def embed_image(self, pooled: jax.Array) -> jax.Array:
    """Pooled image features -> unit-norm float32 [B, proj_dim]."""
    return _l2_normalize(self.image_head(pooled).astype(jnp.float32))

  def embed_text(self, pooled: jax.Array) -> jax.Array:
    """Pooled text features -> unit-norm float32 [B, proj_dim]."""
    return _l2_normalize(self.text_head(pooled).astype(jnp.float32))

  def __call__(self, batch: dict) -> dict:
    """Paired image-text forward pass. ``logit_scale`` is returned in log space (the loss
    uses exp(logit_scale)); ``logit_bias`` as is."""
    tokens, image_pooled = self.encode_image(batch["image"])
    _, text_pooled = self.encode_text(batch["text_ids"], batch["text_mask"])
    return {
        "image_emb": self.embed_image(image_pooled),
        "text_emb": self.embed_text(text_pooled),
        "logit_scale": self.logit_scale[...],
        "logit_bias": self.logit_bias[...],
        "image_tokens": tokens,
    }
