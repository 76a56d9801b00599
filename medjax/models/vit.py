"""Vision Transformer image tower: pre-LN, 2-D sin-cos positions, mean-pooled by default; a
class token, learned positions and LayerScale as options (towers imported from Hugging Face)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from medjax import sharding
from medjax.configs.resolve import POSITIONS
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


def cubic_resize_matrix(size_in: int, size_out: int) -> np.ndarray:
  """[size_out, size_in] weights of 1-D bicubic resampling as PyTorch computes it
  (`interpolate(mode="bicubic", align_corners=False)`: Keys kernel with a = -0.75, half-pixel
  centres, edge samples repeated), so a resized position table equals the one Hugging Face
  towers (ViT, DINOv2) make at run time."""
  a, scale = -0.75, size_in / size_out
  near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1  # |x| <= 1
  far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # 1 < |x| < 2
  out = np.zeros((size_out, size_in), np.float64)
  for o in range(size_out):
    source = (o + 0.5) * scale - 0.5
    first = int(np.floor(source))
    t = source - first
    for offset, weight in zip((-1, 0, 1, 2), (far(t + 1), near(t), near(1 - t), far(2 - t))):
      out[o, min(max(first + offset, 0), size_in - 1)] += weight
  return out.astype(np.float32)


def resize_positions(table: jax.Array, grid: tuple[int, int], new: tuple[int, int]) -> jax.Array:
  """A [rows * cols, width] position table of patch grid `grid` -> the table of grid `new`."""
  if tuple(grid) == tuple(new):
    return table
  rows = jnp.asarray(cubic_resize_matrix(grid[0], new[0]))
  cols = jnp.asarray(cubic_resize_matrix(grid[1], new[1]))
  table = table.reshape(*grid, -1)
  return jnp.einsum("ri,cj,ijd->rcd", rows, cols, table.astype(jnp.float32)).reshape(
      new[0] * new[1], -1).astype(table.dtype)


class ViT(nnx.Module):
  """Images [B, H, W, C] -> (patch tokens [B, N, width] in the compute dtype, pooled [B, width]
  float32).

  Positions are computed for the actual patch grid, so any H, W divisible by the patch size
  work with the same parameters (e.g. pretrain at 224, fine-tune at 384): the sin-cos code is
  computed for it, a learned table (`positions="learned"`, held for the `grid` x `grid` patches
  of the configured image size) is resized bicubically to it. `class_token`: a learned token
  before the patches (its position folded into it); pooled = its final state instead of the
  mean of the patch tokens, which stay N. `block`: LayerScale, norm epsilon, MLP activation.
  """

  def __init__(self, width: int, depth: int, heads: int, mlp_dim: int, patch_size: int,
               channels: int = 3, *, class_token: bool = False, positions: str = "sincos",
               grid: int = 0, block: layers.BlockOptions = layers.BlockOptions(),
               dtype=jnp.float32, param_dtype=jnp.float32,
               stack: layers.StackOptions = layers.StackOptions(), rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    if positions not in POSITIONS or (positions == "learned" and grid < 1):
      raise ValueError(f"positions={positions!r} (grid {grid}): expected one of {POSITIONS}, "
                       "a learned table with its grid >= 1")
    self.width = width
    self.patch_size = patch_size
    self.channels = channels
    self.dtype = dtype
    self.grid = (grid, grid)
    patch_dim = patch_size * patch_size * channels
    # A linear map of flattened patches equals the usual stride-p conv stem, but keeps the
    # kernel a plain ('patch', 'embed') matrix for sharding.
    self.stem = layers.dense(patch_dim, width, ("patch",), ("embed",),
                             kernel_init=nnx.initializers.lecun_normal(), **kw)
    self.blocks = layers.Stack(depth, width, heads, mlp_dim, options=stack, block=block, **kw)
    self.norm = layers.layer_norm(width, eps=block.norm_eps, **kw)
    table = layers.partitioned(nnx.initializers.normal(0.02), "length", "embed")
    self.positions = (nnx.Param(table(rngs.params(), (grid * grid, width), param_dtype))
                      if positions == "learned" else None)
    token = layers.partitioned(nnx.initializers.normal(0.02), "embed")
    self.cls = nnx.Param(token(rngs.params(), (width,), param_dtype)) if class_token else None

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

  def position_code(self, rows: int, cols: int) -> jax.Array:
    """[rows * cols, width] positions of a rows x cols patch grid, in the compute dtype."""
    if self.positions is None:
      return jnp.asarray(sincos_2d(rows, cols, self.width), self.dtype)
    return resize_positions(self.positions[...], self.grid, (rows, cols)).astype(self.dtype)

  def __call__(self, images: jax.Array, hidden: jax.Array | None = None,
               mask_token: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """`hidden` [B, N] bool (iBOT's student): those patches enter as `mask_token` [width]
    instead of their pixels' embedding, with their position code as every patch."""
    patches, (rows, cols) = self.patchify(images.astype(self.dtype))
    x = self.stem(patches)
    if hidden is not None:
      x = jnp.where(hidden[..., None], mask_token.astype(x.dtype), x)
    tokens = self._encode(x + self.position_code(rows, cols))
    if self.cls is not None:
      return tokens[:, 1:], tokens[:, 0].astype(jnp.float32)
    pooled = jnp.mean(tokens.astype(jnp.float32), axis=1)
    return tokens, pooled

  def encode_kept(self, images: jax.Array, keep: jax.Array) -> jax.Array:
    """MAE encoder: only the patches at ``keep`` [B, K] (raster indices) enter the blocks, each
    with its own position code. -> tokens [B, K, width]. Hidden patches cost nothing, and no
    information about them reaches the tokens."""
    patches, (rows, cols) = self.patchify(images.astype(self.dtype))
    patches = jnp.take_along_axis(patches, keep[..., None], axis=1)
    tokens = self._encode(self.stem(patches) + self.position_code(rows, cols)[keep])
    return tokens if self.cls is None else tokens[:, 1:]

  def _encode(self, x: jax.Array) -> jax.Array:
    """Patch embeddings [B, N, width] -> final states [B, N (+1 class token first), width]."""
    if self.cls is not None:
      cls = jnp.broadcast_to(self.cls[...].astype(self.dtype), (x.shape[0], 1, self.width))
      x = jnp.concatenate([cls, x], axis=1)
    x = sharding.constrain(x, layers.RESIDUAL)
    return self.norm(self.blocks(x))
