"""Tower options beyond medjax's own towers (model.image / model.text, configs/base.py): class
token, learned positions, LayerScale, post-LN text encoder. Their numbers against transformers
are in tests/hf; here their structure, sharding and config checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from medjax import sharding
from medjax.configs import base, resolve
from medjax.models import layers, text, vit
from medjax.models.medmllm import MedMLLM

import batches

IMAGE = dict(width=32, depth=1, heads=2, mlp_dim=64, patch_size=8, channels=1)


def _vit(**options):
  return vit.ViT(**IMAGE, grid=4, rngs=nnx.Rngs(0), **options)


@nnx.jit
def _call(module, *args):
  return module(*args)


@pytest.fixture(scope="module")
def imported_style():
  """A ViT with a class token and a learned position table for 4 x 4 patches (ViT, DINOv2)."""
  return _vit(class_token=True, positions="learned")


def test_every_option_param_has_logical_axes_and_places_on_a_mesh():
  cfg = batches.config(image=dict(class_token=True, positions="learned", layer_scale=1.0),
                       text=dict(norm="post"))
  state = nnx.state(nnx.eval_shape(lambda: MedMLLM(cfg.model, rngs=nnx.Rngs(0))))
  abstract, specs = nnx.to_pure_dict(state), nnx.to_pure_dict(nnx.get_partition_spec(state))
  mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
  placed = sharding.param_shardings(abstract, specs, mesh)  # every logical name has a rule
  fsdp = lambda s: s.spec[-1] == "fsdp"  # the width is split over fsdp (ZeRO-3), as elsewhere
  assert fsdp(placed["image"]["cls"]) and fsdp(placed["image"]["positions"])
  assert fsdp(placed["image"]["blocks"]["layers"]["scale_mlp"])
  assert fsdp(placed["text"]["embed_norm"]["scale"]) and "norm" not in abstract["text"]


def test_class_token_pools_its_own_state_and_leaves_the_patch_tokens(imported_style):
  model = imported_style
  images = jax.random.normal(jax.random.key(0), (2, 32, 32, 1))
  tokens, pooled = _call(model, images)
  assert tokens.shape == (2, 16, 32) and pooled.shape == (2, 32)
  assert np.abs(np.asarray(pooled - tokens.mean(axis=1))).max() > 1e-2
  # MAE: keeping every patch (in order) gives the full patch tokens.
  kept = nnx.jit(lambda m, x, k: m.encode_kept(x, k))(model, images,
                                                      jnp.tile(jnp.arange(16), (2, 1)))
  np.testing.assert_allclose(kept, tokens, atol=1e-5)


def test_learned_positions_are_the_table_at_its_grid_and_resized_elsewhere(imported_style):
  model = imported_style
  table = model.positions[...]
  np.testing.assert_array_equal(model.position_code(4, 4), table)
  tokens, _ = _call(model, jnp.zeros((1, 56, 40, 1)))  # a 7 x 5 grid
  assert tokens.shape == (1, 35, 32)
  # Resampling weights add up to one: a constant table stays constant on any grid.
  constant = jnp.full((16, 32), 0.7)
  np.testing.assert_allclose(vit.resize_positions(constant, (4, 4), (7, 5)), 0.7, atol=1e-6)


def test_layer_scale_scales_each_residual_branch():
  # A near-zero scale leaves each block's input through: the tokens are the final LayerNorm of
  # the embedded patches.
  model = _vit(block=layers.BlockOptions(layer_scale=1e-7))
  images = jax.random.normal(jax.random.key(1), (2, 32, 32, 1))
  patches, _ = model.patchify(images)
  embedded = model.stem(patches) + model.position_code(4, 4)
  np.testing.assert_allclose(_call(model, images)[0], model.norm(embedded), atol=1e-4)
  assert model.blocks.layers.scale_attn[...].shape == (1, 32)  # [layers, width]


def test_post_ln_text_encoder_normalises_embeddings_and_each_sum():
  post = text.TextEncoder(64, 32, 1, 2, 64, 16, block=layers.BlockOptions(norm="post"),
                          rngs=nnx.Rngs(0))
  assert post.norm is None and post.embed_norm is not None
  ids = jax.random.randint(jax.random.key(2), (2, 8), 4, 64)
  mask = jnp.arange(8)[None] < jnp.array([[8], [5]])
  states, _ = _call(post, ids, mask)
  # Every state is a LayerNorm output (scale 1, bias 0 at init): zero mean, unit variance.
  np.testing.assert_allclose(states.mean(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(states.var(-1), 1.0, atol=1e-3)
  junk = jnp.where(mask, ids, 7)  # padding never reaches the real positions
  np.testing.assert_allclose(_call(post, junk, mask)[0][0, :5], states[0, :5], atol=1e-5)


def test_configs_without_the_options_get_the_defaults_and_bad_values_are_named():
  c = base.get_config()
  c.model.image = dict(width=32, depth=1, heads=2, mlp_dim=64, patch_size=8, channels=1,
                       image_size=32)  # a config written before the options existed
  out = resolve.resolved(c)
  assert {k: out.model.image[k] for k in base.IMAGE_OPTIONS} == base.IMAGE_OPTIONS
  assert {k: out.model.text[k] for k in base.TEXT_OPTIONS} == base.TEXT_OPTIONS
  for field, value in (("model.image.positions", "rope"), ("model.text.norm", "sandwich"),
                       ("model.image.mlp_act", "relu"), ("model.text.norm_eps", 0.0),
                       ("model.image.layer_scale", -1.0), ("init_from", "hf:"),
                       ("init_from", "hf:a,hf:b,hf:c"), ("data.tokenizer", "hf:")):
    bad = base.get_config()
    section, _, name = field.rpartition(".")
    target = bad
    for part in filter(None, section.split(".")):
      target = target[part]
    target[name] = value
    with pytest.raises(resolve.ConfigError, match=field.replace(".", r"\.")):
      resolve.resolved(bad)
