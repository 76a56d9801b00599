"""Vision Transformer image tower (pre-LN, 2-D sin-cos positions, mean-pooled)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from medjax import sharding
from medjax.models import layers

SIZES = {
    "Ti": dict(width=192, depth=12, heads=3, mlp_dim=768),
    "S": dict(width=384, depth=12, heads=6, mlp_dim=1536),
    "B": dict(width=768, depth=12, heads=12, mlp_dim=3072),
    "L": dict(width=1024, depth=24, heads=16, mlp_dim=4096),
    "H": dict(width=1280, depth=32, heads=16, mlp_dim=5120),
}


def size(name: str) -> dict:
  """'L/16' -> dict(width=1024, depth=24, heads=16, mlp_dim=4096, patch_size=16)."""
  variant, sep, patch = name.partition("/")
  if not sep or not patch.isdigit():
    raise ValueError(f"ViT size must look like 'B/16', got {name!r}")
  if variant not in SIZES:
    raise ValueError(f"Unknown ViT variant {variant!r}; known: {sorted(SIZES)}")
  return dict(SIZES[variant], patch_size=int(patch))


def sincos_2d(rows: int, cols: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
  """Fixed [rows * cols, width] position code: a quarter of the channels each for sin/cos of
  the column and of the row, at geometrically spaced frequencies."""
  if width % 4:
    raise ValueError(f"sin-cos 2-D positions need width divisible by 4, got {width}")
  quarter = width // 4
  omega = 1.0 / temperature ** (np.arange(quarter) / quarter)
  y, x = np.mgrid[:rows, :cols]
  y = y.reshape(-1, 1) * omega
  x = x.reshape(-1, 1) * omega
  return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1).astype(np.float32)


class ViT(nnx.Module):
  """Images [B, H, W, C] -> (patch tokens [B, N, width], pooled [B, width] float32).

  Positions are computed for the actual patch grid, so any H, W divisible by the patch size
  work with the same parameters (e.g. pretrain at 224, fine-tune at 384).
  """

  def __init__(self, width: int, depth: int, heads: int, mlp_dim: int, patch_size: int,
               channels: int = 3, *, dtype=jnp.float32, param_dtype=jnp.float32,
               stack: layers.StackOptions = layers.StackOptions(), rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.width = width
    self.patch_size = patch_size
    self.channels = channels
    self.dtype = dtype
    patch_dim = patch_size * patch_size * channels
    # A linear map of flattened patches equals the usual stride-p conv stem, but keeps the
    # kernel a plain ('patch', 'embed') matrix for sharding.
    self.stem = nnx.Einsum(
        "bnp,pd->bnd", (patch_dim, width), (width,),
        kernel_init=layers.partitioned(nnx.initializers.lecun_normal(), "patch", "embed"),
        bias_init=layers.partitioned(nnx.initializers.zeros_init(), "embed"), **kw)
    self.blocks = layers.Stack(depth, width, heads, mlp_dim, options=stack, **kw)
    self.norm = layers.layer_norm(width, **kw)

  def patchify(self, images: jax.Array) -> tuple[jax.Array, tuple[int, int]]:
    """[B, H, W, C] -> ([B, rows * cols, p * p * C], (rows, cols)), patches in raster order."""
    b, h, w, c = images.shape
    p = self.patch_size
    if h % p or w % p or c != self.channels:
      raise ValueError(f"images {images.shape} must be [B, H, W, {self.channels}] with H, W "
                       f"divisible by patch size {p}")
    rows, cols = h // p, w // p
    x = images.reshape(b, rows, p, cols, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, rows * cols, p * p * c), (rows, cols)

  def __call__(self, images: jax.Array, hidden: jax.Array | None = None,
               mask_token: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """`hidden` [B, N] bool (iBOT's student): those patches enter as `mask_token` [width]
    instead of their pixels' embedding, with their position code as every patch."""
    patches, (rows, cols) = self.patchify(images.astype(self.dtype))
    positions = jnp.asarray(sincos_2d(rows, cols, self.width), self.dtype)
    x = self.stem(patches)
    if hidden is not None:
      x = jnp.where(hidden[..., None], mask_token.astype(x.dtype), x)
    tokens = self._encode(x + positions)
    pooled = jnp.mean(tokens.astype(jnp.float32), axis=1)
    return tokens, pooled

  def encode_kept(self, images: jax.Array, keep: jax.Array) -> jax.Array:
    """MAE encoder: only the patches at ``keep`` [B, K] (raster indices) enter the blocks, each
    with its own position code. -> tokens [B, K, width]. Hidden patches cost nothing, and no
    information about them reaches the tokens."""
    patches, (rows, cols) = self.patchify(images.astype(self.dtype))
    patches = jnp.take_along_axis(patches, keep[..., None], axis=1)
    positions = jnp.asarray(sincos_2d(rows, cols, self.width), self.dtype)[keep]
    return self._encode(self.stem(patches) + positions)

  def _encode(self, x: jax.Array) -> jax.Array:
    x = sharding.constrain(x, layers.RESIDUAL)
    return self.norm(self.blocks(x))
