"""Masked image modelling (He et al. 2022): patch selection, pixel targets and the light decoder."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from medjax import sharding
from medjax.models import layers
from medjax.models.vit import sincos_2d


def kept_count(num_patches: int, mask_ratio: float) -> int:
  """Patches the encoder sees; at least one, so the encoder always has an input."""
  return max(1, int(num_patches * (1.0 - mask_ratio)))


def choose_patches(noise: jax.Array, keep_count: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """noise [B, N] -> (keep [B, K] raster indices of the lowest-noise patches, restore [B, N]
  (position of each patch in [kept; hidden] order), hidden [B, N] float32, 1 = hidden).

  Sorting noise gives a uniformly random subset per row with a static K, so shapes stay fixed
  under jit and the pipeline alone decides (and can reproduce) which patches are hidden.
  """
  order = jnp.argsort(noise, axis=1)
  restore = jnp.argsort(order, axis=1)
  hidden = (restore >= keep_count).astype(jnp.float32)
  return order[:, :keep_count], restore, hidden


def normalized_patches(patches: jax.Array) -> jax.Array:
  """Per-patch standardised pixels [B, N, P]: MAE's 'norm_pix' target. Predicting local contrast
  rather than absolute intensity gave MAE better representations."""
  patches = patches.astype(jnp.float32)
  mean = jnp.mean(patches, axis=-1, keepdims=True)
  var = jnp.var(patches, axis=-1, keepdims=True)
  return (patches - mean) * jax.lax.rsqrt(var + 1e-6)


class MaeDecoder(nnx.Module):
  """Encoded kept patches [B, K, in_width] -> predicted pixels of all patches [B, N, patch_dim].

  Hidden positions start as one learned mask token; every position gets a fixed 2-D sin-cos
  code so the decoder knows where each (kept or hidden) patch sits. Narrow and shallow on
  purpose: MAE found a light decoder enough, and it is the only part that sees all N tokens.
  """

  def __init__(self, in_width: int, width: int, depth: int, heads: int, mlp_dim: int,
               patch_dim: int, *, dtype=jnp.float32, param_dtype=jnp.float32,
               stack: layers.StackOptions = layers.StackOptions(), rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.width = width
    self.embed = layers.dense(in_width, width, ("embed",), ("embed",), **kw)
    init = layers.partitioned(nnx.initializers.normal(0.02), "embed")
    self.mask_token = nnx.Param(init(rngs.params(), (width,), param_dtype))
    self.blocks = layers.Stack(depth, width, heads, mlp_dim, options=stack, **kw)
    self.norm = layers.layer_norm(width, **kw)
    self.pred = layers.dense(width, patch_dim, ("embed",), ("patch",), **kw)

  def __call__(self, kept: jax.Array, restore: jax.Array, grid: tuple[int, int]) -> jax.Array:
    b, k, _ = kept.shape
    n = restore.shape[1]
    x = self.embed(kept)  # float32 out: the residual stream (medjax/models/layers.py)
    masks = jnp.broadcast_to(self.mask_token[...], (b, n - k, self.width))
    # [kept; hidden] back to raster order, so position i carries patch i.
    x = jnp.take_along_axis(jnp.concatenate([x, masks], axis=1), restore[..., None], axis=1)
    x = x + sincos_2d(*grid, self.width)
    x = self.blocks(sharding.constrain(x, layers.RESIDUAL))
    return self.pred(self.norm(x))
