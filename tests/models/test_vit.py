import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from medjax.models import vit
from medjax.models.medmllm import param_count

TINY = dict(width=32, depth=1, heads=2, mlp_dim=64, patch_size=8, channels=3)




@nnx.jit
def _call(module, *args):
  return module(*args)


@pytest.fixture(scope="module")
def tiny():
  return vit.ViT(**TINY, rngs=nnx.Rngs(0))


def test_size_parses_variant_and_patch():
  assert vit.size("L/16") == dict(width=1024, depth=24, heads=16, mlp_dim=4096, patch_size=16)
  assert vit.size("Ti/8")["patch_size"] == 8
  for cfg in vit.SIZES.values():
    assert cfg["width"] % cfg["heads"] == 0 and cfg["mlp_dim"] == 4 * cfg["width"]
  for bad in ("L", "L/", "L/x", "XL/16"):
    with pytest.raises(ValueError):
      vit.size(bad)


def test_any_resolution_divisible_by_the_patch(tiny):
  for h, w in ((32, 32), (48, 64)):
    images = jax.random.uniform(jax.random.key(h), (2, h, w, 3))
    tokens, pooled = _call(tiny, images)
    n = (h // 8) * (w // 8)
    assert tokens.shape == (2, n, 32) and pooled.shape == (2, 32)
    assert pooled.dtype == jnp.float32
    np.testing.assert_allclose(pooled, tokens.mean(axis=1), atol=1e-5)
  with pytest.raises(ValueError, match="divisible"):
    tiny(jnp.zeros((1, 36, 32, 3)))


def test_patchify_is_raster_order(tiny):
  images = jnp.arange(2 * 16 * 24 * 3, dtype=jnp.float32).reshape(2, 16, 24, 3)
  patches, grid = tiny.patchify(images)
  assert grid == (2, 3) and patches.shape == (2, 6, 8 * 8 * 3)
  # Patch 4 is row 1, column 1.
  np.testing.assert_array_equal(patches[1, 4], images[1, 8:16, 8:16].reshape(-1))


def test_encode_kept_sees_only_the_kept_patches_at_their_positions(tiny):
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  tokens, _ = _call(tiny, images)
  # Attention is permutation-equivariant once positions are attached: keeping every patch in
  # any order gives the full tokens in that order.
  order = jnp.stack([jax.random.permutation(jax.random.key(i), 16) for i in (2, 3)])
  kept = nnx.jit(lambda m, x, k: m.encode_kept(x, k))(tiny, images, order)
  np.testing.assert_allclose(kept, jnp.take_along_axis(tokens, order[..., None], 1), atol=1e-5)
  # With a subset kept, the other patches' pixels cannot reach the kept tokens.
  keep = order[:, :4]
  hidden = jnp.ones((2, 16), bool).at[jnp.arange(2)[:, None], keep].set(False)
  noise = jnp.where(hidden[..., None], 5.0, 0.0)
  patches, _ = tiny.patchify(images)
  other = (patches + noise).reshape(2, 4, 4, 8, 8, 3).transpose(0, 1, 3, 2, 4, 5)
  other = other.reshape(2, 32, 32, 3)
  subset = nnx.jit(lambda m, x, k: m.encode_kept(x, k))
  np.testing.assert_allclose(subset(tiny, images, keep), subset(tiny, other, keep), atol=1e-5)
  assert subset(tiny, images, keep).shape == (2, 4, 32)


def test_sincos_positions_are_distinct_and_bounded():
  pos = vit.sincos_2d(3, 4, 32)
  assert pos.shape == (12, 32)
  assert np.abs(pos).max() <= 1.0
  distances = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
  assert np.all(distances[~np.eye(12, dtype=bool)] > 1e-3)
  # The column code repeats down rows and the row code across columns.
  np.testing.assert_allclose(pos[0, :16], pos[4, :16])
  np.testing.assert_allclose(pos[0, 16:], pos[1, 16:])


def _vit_param_formula(width, depth, mlp_dim, patch_size, channels=3, **_):
  stem = patch_size * patch_size * channels * width + width
  attention = 4 * (width * width + width)  # q, k, v, out with biases
  mlp = 2 * width * mlp_dim + mlp_dim + width
  norms = 2 * 2 * width  # two LayerNorms per block, scale and bias
  return stem + depth * (attention + mlp + norms) + 2 * width  # + final LayerNorm


def test_vit_b16_param_count_matches_the_architecture():
  cfg = vit.size("B/16")
  model = nnx.eval_shape(lambda: vit.ViT(**cfg, rngs=nnx.Rngs(0)))
  count = param_count(nnx.state(model, nnx.Param))
  assert count == _vit_param_formula(**cfg)
  # timm's vit_base_patch16_224 (86,567,656) adds a learned position table, a class token and
  # a 1000-way head to this same architecture.
  learned_extras = (14 * 14 + 1) * 768 + 768 + (768 * 1000 + 1000)
  assert count + learned_extras == 86_567_656


def test_bfloat16_computes_in_bf16_and_pools_in_float32():
  model = nnx.eval_shape(lambda: vit.ViT(**TINY, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
  tokens, pooled = jax.eval_shape(lambda m, x: m(x), model, jnp.zeros((2, 32, 32, 3)))
  assert tokens.dtype == jnp.bfloat16 and pooled.dtype == jnp.float32
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
