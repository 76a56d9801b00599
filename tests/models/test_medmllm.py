import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from medjax import sharding
from medjax.models.medmllm import MedMLLM, param_count

PROJ, VOCAB = 16, 64




def tiny_config(**overrides) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict(dict(
      dtype="float32", remat=False, proj_dim=PROJ,
      image=dict(width=32, depth=1, heads=2, mlp_dim=64, patch_size=8, channels=3, image_size=32),
      text=dict(vocab_size=VOCAB, width=32, depth=1, heads=2, mlp_dim=64, max_len=16),
      decoder=dict(width=32, depth=1, heads=2, mlp_dim=64, max_len=16)))
  cfg.update(overrides)
  return cfg


def _variant(model, **overrides):
  """Same parameters as ``model`` under another config, without paying for a second init."""
  other = nnx.eval_shape(lambda: MedMLLM(tiny_config(**overrides), rngs=nnx.Rngs(0)))
  nnx.update(other, nnx.state(model))
  return other


@nnx.jit
def _call(model, batch):
  return model(batch)


@pytest.fixture(scope="module")
def model():
  return MedMLLM(tiny_config(), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def batch():
  keys = jax.random.split(jax.random.key(0), 2)
  return {
      "image": jax.random.uniform(keys[0], (4, 32, 32, 3)),
      "text_ids": jax.random.randint(keys[1], (4, 8), 1, VOCAB, jnp.int32),
      "text_mask": jnp.arange(8)[None] < jnp.array([[5], [8], [1], [8]]),
  }


def test_forward_returns_unit_norm_float32_embeddings(model, batch):
  out = _call(model, batch)
  assert out["image_emb"].shape == out["text_emb"].shape == (4, PROJ)
  for key in ("image_emb", "text_emb"):
    assert out[key].dtype == jnp.float32
    np.testing.assert_allclose(jnp.linalg.norm(out[key], axis=-1), 1.0, rtol=1e-5)
  assert out["image_tokens"].shape == (4, 16, 32)
  np.testing.assert_allclose(out["logit_scale"], math.log(10.0), rtol=1e-6)
  np.testing.assert_allclose(out["logit_bias"], -10.0)
  assert out["logit_scale"].shape == out["logit_bias"].shape == ()


def test_every_param_has_logical_axes_known_to_the_mesh_rules(model):
  params = nnx.state(model, nnx.Param)
  assert params == nnx.state(model)  # no RNG, batch-stat or other non-Param state
  known = dict(sharding.LOGICAL_AXIS_RULES)
  specs = nnx.get_partition_spec(params)
  pairs = list(zip(jax.tree.leaves_with_path(params), jax.tree.leaves(specs), strict=True))
  assert len(pairs) > 50
  for (path, value), spec in pairs:
    name = jax.tree_util.keystr(path)
    assert len(spec) == value.ndim, f"{name}: spec {spec} for shape {value.shape}"
    assert all(axis in known for axis in spec), f"{name}: unknown logical axis in {spec}"
    assert value.dtype == jnp.float32, name


def test_decode_gives_next_token_logits(model, batch):
  tokens = _call(model, batch)["image_tokens"]
  logits = nnx.jit(lambda m, *a: m.decode(*a))(model, batch["text_ids"], batch["text_mask"],
                                               tokens)
  assert logits.shape == (4, 8, VOCAB) and logits.dtype == jnp.float32


def test_decoder_depth_zero_builds_no_decoder():
  cfg = tiny_config()
  cfg.decoder.depth = 0
  model = nnx.eval_shape(lambda: MedMLLM(cfg, rngs=nnx.Rngs(0)))
  assert "decoder" not in nnx.to_pure_dict(nnx.state(model))
  with pytest.raises(ValueError, match="no text decoder"):
    model.decode(jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), bool), jnp.zeros((1, 16, 32)))


def test_bfloat16_runs_and_returns_float32(model, batch):
  out = _call(_variant(model, dtype="bfloat16"), batch)
  reference = _call(model, batch)
  assert out["image_tokens"].dtype == jnp.bfloat16
  for key in ("image_emb", "text_emb"):
    assert out[key].dtype == jnp.float32
    cosine = jnp.sum(out[key] * reference[key], axis=-1)
    assert np.all(cosine > 0.98), (key, cosine)


def test_sharded_forward_matches_one_device(model, batch):
  if jax.device_count() < 8:
    pytest.skip("needs 8 (fake) devices, see tests/conftest.py")
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices()[:8])
  graphdef, state = nnx.split(model)
  params = nnx.to_pure_dict(state)
  logical = nnx.to_pure_dict(nnx.get_partition_spec(state))
  params = jax.device_put(params, sharding.param_shardings(params, logical, mesh))
  kernel = params["text"]["blocks"]["layers"]["mlp"]["up"]["kernel"]
  assert kernel.sharding.spec == P(None, "fsdp", "tensor")  # (layers, embed, mlp)
  sharded_batch = jax.device_put(batch, sharding.batch_sharding(mesh))
  # Under the mesh, the activation constraints inside the model are real resharding ops.
  with jax.set_mesh(mesh):
    got = jax.jit(lambda p, b: nnx.merge(graphdef, p)(b))(params, sharded_batch)
  want = _call(model, batch)
  for key in want:
    np.testing.assert_allclose(got[key], want[key], atol=2e-5)


def test_split_then_merge_from_a_pure_dict_round_trips(model, batch):
  graphdef, state = nnx.split(model)
  merged = nnx.merge(graphdef, nnx.to_pure_dict(state))
  got, want = _call(merged, batch), _call(model, batch)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key])


def test_remat_checkpoints_every_block_of_every_tower(model, batch):
  # That a checkpointed block gives the same values and grads is tested on layers.Stack
  # (test_layers); here: the flag reaches all towers, each scanned body is checkpointed once.
  def grad_jaxpr(model):
    graphdef, state = nnx.split(model)

    def loss(state):
      model = nnx.merge(graphdef, state)
      out = model(batch)
      logits = model.decode(batch["text_ids"], batch["text_mask"], out["image_tokens"])
      return jnp.sum(out["image_emb"] * out["text_emb"]) + jnp.mean(logits ** 2)

    return str(jax.make_jaxpr(jax.grad(loss))(state))

  towers = 3  # image, text encoder, decoder
  assert grad_jaxpr(_variant(model, remat=True)).count("remat2[") == towers
  assert "remat" not in grad_jaxpr(model)


def test_param_count_agrees_for_real_abstract_and_pure_states(model):
  state = nnx.state(model)
  count = param_count(state)
  assert count == sum(np.size(x) for x in jax.tree.leaves(nnx.to_pure_dict(state)))
  abstract = nnx.eval_shape(lambda: MedMLLM(tiny_config(), rngs=nnx.Rngs(0)))
  assert param_count(nnx.state(abstract)) == count
  heads = 2 * 32 * PROJ
  assert param_count(nnx.state(model.image_head)) + param_count(nnx.state(model.text_head)) == heads
