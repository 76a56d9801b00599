"""DINO's projection head (Caron et al. 2021), used for DINO on pooled features and for iBOT on
patch tokens: features -> logits over learned prototypes."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from medjax.models import layers


class DinoHead(nnx.Module):
  """Features [..., width] -> prototype logits [..., prototypes] float32, before any temperature.

  An MLP of `depth` linear maps (GELU between them; the hidden ones `hidden` wide) to a
  `bottleneck`, l2-normalised, then a weight-normalised linear map without bias onto the
  prototypes. DINO fixes the weight norm's gain at 1, so each prototype is a unit vector and the
  logits are cosines in [-1, 1]: only the directions of the prototype weights are learned.
  """

  def __init__(self, width: int, *, prototypes: int, hidden: int, bottleneck: int, depth: int,
               dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    dims = [width] + [hidden] * (depth - 1) + [bottleneck]
    # Logical axes alternate (embed, mlp), (mlp, embed), ... as in a transformer MLP, so each
    # kernel is split over fsdp along one dimension and over tensor along the other.
    axes = ("embed", "mlp")
    self.depth = depth
    for i in range(depth):  # named dense0, dense1, ...: string keys, as every medjax param path
      setattr(self, f"dense{i}",
              layers.dense(dims[i], dims[i + 1], (axes[i % 2],), (axes[(i + 1) % 2],), **kw))
    init = layers.partitioned(nnx.initializers.lecun_normal(), "embed", "prototypes")
    self.prototypes = nnx.Param(init(rngs.params(), (bottleneck, prototypes), param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(self.depth):
      x = getattr(self, f"dense{i}")(x)
      if i < self.depth - 1:
        x = nnx.gelu(x)
    z = layers.l2_normalize(x.astype(jnp.float32))
    return z @ layers.l2_normalize(self.prototypes[...].astype(jnp.float32), axis=0)
