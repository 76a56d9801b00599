"""Cross-modal fusion (as in M3AE, Chen et al. 2022): a few transformer blocks over the
concatenated image tokens and text states, so masked pixels can be predicted from the report and
masked words from the image."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from medjax.models import layers


class Fusion(nnx.Module):
  """(image tokens [B, N, image_width], text states [B, T, width], text mask [B, T]) ->
  (fused image tokens [B, N, width], fused text states [B, T, width]).

  Works at the text width, so the fused text states feed the text encoder's tied MLM head
  directly. Each modality adds its own learned type vector: both carry position codes of their
  own, and without a type signal an image token and a text token at similar codes would look
  alike to attention.
  """

  def __init__(self, image_width: int, width: int, depth: int, heads: int, mlp_dim: int, *,
               dtype=jnp.float32, param_dtype=jnp.float32,
               stack: layers.StackOptions = layers.StackOptions(), rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.image_in = layers.dense(image_width, width, ("embed",), ("embed",), **kw)
    init = layers.partitioned(nnx.initializers.normal(0.02), "embed")
    self.image_type = nnx.Param(init(rngs.params(), (width,), param_dtype))
    self.text_type = nnx.Param(init(rngs.params(), (width,), param_dtype))
    self.blocks = layers.Stack(depth, width, heads, mlp_dim, options=stack, **kw)
    self.norm = layers.layer_norm(width, **kw)

  def __call__(self, image_tokens: jax.Array, text_states: jax.Array,
               text_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    n = image_tokens.shape[1]
    # The float32 residual stream (medjax/models/layers.py); image_in casts its own input.
    image = self.image_in(image_tokens) + self.image_type[...]
    text = text_states.astype(jnp.float32) + self.text_type[...]
    # Image tokens are all real; padded text positions are hidden from every query.
    mask = jnp.concatenate([jnp.ones(image_tokens.shape[:2], bool), text_mask.astype(bool)], 1)
    x = self.blocks(jnp.concatenate([image, text], axis=1), layers.padding_mask(mask))
    x = self.norm(x)
    return x[:, :n], x[:, n:]
