import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from medjax import sharding
from medjax.models import forward
from medjax.models.medmllm import OUTPUTS, MedMLLM, param_count
from medjax.models.text import TiedLogits

import batches

PROJ, VOCAB, B, T, TS, N = 16, 64, 4, 8, 6, 16  # N: 4 x 4 patches of 8 px in 32 x 32 images
PAIR = frozenset({"image_emb", "text_emb", "logit_scale", "logit_bias"})


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  """With the self-distillation heads, so every output in OUTPUTS can be computed."""
  return batches.config(channels=3, text_len=T, sentence_len=TS, vocab=VOCAB,
                        **{**batches.HEADS, **overrides}).model


def _variant(model, **overrides):
  """Same parameters as ``model`` under another config, without paying for a second init."""
  other = nnx.eval_shape(lambda: MedMLLM(tiny_config(**overrides), rngs=nnx.Rngs(0)))
  nnx.update(other, nnx.state(model))
  return other


@functools.partial(nnx.jit, static_argnames="needs")
def _call(model, batch, needs=PAIR):
  return model(batch, needs=needs)


@pytest.fixture(scope="module")
def model():
  return MedMLLM(tiny_config(), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def fused():
  return MedMLLM(tiny_config(fusion=dict(depth=1, heads=2, mlp_dim=64)), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def batch():
  """Every contract batch key (tests/batches.py), the multi-crop ones too, as device arrays."""
  return jax.tree.map(jnp.asarray, batches.random_batch(batches.config(
      channels=3, text_len=T, sentence_len=TS, vocab=VOCAB, data=batches.MULTI_CROP,
      objectives=dict(dino=1.0, ibot=1.0), **batches.HEADS), B))


def test_forward_returns_unit_norm_float32_embeddings(model, batch):
  out = _call(model, batch, needs=OUTPUTS)
  assert set(out) == OUTPUTS
  for key in ("image_emb", "text_emb", "view_emb", "view2_emb", "findings_emb", "impression_emb"):
    assert out[key].shape == (B, PROJ) and out[key].dtype == jnp.float32, key
    np.testing.assert_allclose(jnp.linalg.norm(out[key], axis=-1), 1.0, rtol=1e-5)
  for key, length in (("mlm_logits", T), ("caption_logits", T), ("sr_logits", TS)):
    assert out[key].shape == (B, length, VOCAB) and out[key].dtype == jnp.float32, key
  np.testing.assert_allclose(out["logit_scale"], math.log(10.0), rtol=1e-6)
  np.testing.assert_allclose(out["logit_bias"], -10.0)
  assert out["logit_scale"].shape == out["logit_bias"].shape == ()


def test_only_the_needed_outputs_and_inputs(model, batch):
  text_only = {k: batch[k] for k in ("text_ids", "text_mask")}  # no image keys at all
  out = _call(model, text_only, needs=frozenset({"text_emb"}))
  assert set(out) == {"text_emb"}
  np.testing.assert_allclose(out["text_emb"], _call(model, batch)["text_emb"], atol=1e-6)
  with pytest.raises(ValueError, match="image_embedding"):
    model(batch, needs=frozenset({"image_embedding"}))


def test_inputs_encoded_together_match_one_at_a_time(model, batch):
  # Several texts (and both views) share one tower pass; each must come out as if alone.
  out = _call(model, batch, needs=OUTPUTS)
  for name in ("findings", "impression"):
    alone = _call(model, {"text_ids": batch[f"{name}_ids"], "text_mask": batch[f"{name}_mask"]},
                  needs=frozenset({"text_emb"}))
    _, pooled = model.encode_text(batch[f"{name}_ids"], batch[f"{name}_mask"])
    want = model.section_head(pooled)
    np.testing.assert_allclose(out[f"{name}_emb"], want / jnp.linalg.norm(want, axis=-1,
                                                                         keepdims=True), atol=1e-5)
    assert not np.allclose(out[f"{name}_emb"], alone["text_emb"], atol=1e-3)  # own head
  view2 = _call(model, {"image2": batch["image2"]}, needs=frozenset({"view2_emb"}))
  np.testing.assert_allclose(out["view2_emb"], view2["view2_emb"], atol=1e-5)


def test_sentence_reconstruction_reads_the_real_context_only(model, batch):
  needs = frozenset({"sr_logits"})
  out = _call(model, batch, needs=needs)["sr_logits"]
  junk = jnp.where(batch["sr_context_mask"], batch["sr_context_ids"], 7)
  np.testing.assert_allclose(_call(model, dict(batch, sr_context_ids=junk), needs=needs)
                             ["sr_logits"], out, atol=1e-5)
  real = batch["sr_context_ids"].at[:, 0].set(3)
  assert not np.allclose(_call(model, dict(batch, sr_context_ids=real), needs=needs)
                         ["sr_logits"], out, atol=1e-4)


def _pixels(patch_values):
  """[B, N] per-patch values -> [B, 32, 32, 1] images, each 8 x 8 patch filled with its value."""
  grid = jnp.asarray(patch_values, jnp.float32).reshape(B, 4, 4)
  return jnp.repeat(jnp.repeat(grid, 8, axis=1), 8, axis=2)[..., None]


def test_mae_hides_the_highest_noise_patches_and_never_sees_them(model, batch):
  out = _call(model, batch, needs=OUTPUTS)
  assert out["mae_pred"].shape == out["mae_target"].shape == (B, N, 8 * 8 * 3)
  mask = np.asarray(out["mae_mask"])
  assert mask.shape == (B, N) and np.all(mask.sum(1) == N - N // 4)  # 75% hidden
  noise = np.asarray(batch["mae_noise"])
  for row in range(B):  # every hidden patch has more noise than every kept one
    assert noise[row][mask[row] == 1].min() > noise[row][mask[row] == 0].max()
  target = np.asarray(out["mae_target"])
  np.testing.assert_allclose(target.mean(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(target.std(-1), 1.0, atol=1e-3)
  # Repainting the hidden patches changes the targets but cannot change the predictions;
  # repainting the kept ones changes both.
  paint = jax.random.uniform(jax.random.key(9), batch["image"].shape)
  for patches, pred_changes in ((mask, False), (1 - mask, True)):
    image = batch["image"] + paint * _pixels(patches)
    other = _call(model, dict(batch, image=image), needs=OUTPUTS)
    assert np.allclose(other["mae_pred"], out["mae_pred"], atol=1e-5) != pred_changes
    assert not np.allclose(other["mae_target"], out["mae_target"], atol=1e-3)


def test_self_distillation_outputs_and_what_the_student_sees(model, batch):
  out = _call(model, batch, needs=OUTPUTS)
  prototypes = batches.HEADS["dino_head"]["prototypes"]
  assert out["dino_global"].shape == (B, 2, prototypes)
  assert out["dino_local"].shape == (B, batches.MULTI_CROP["local_crops"], prototypes)
  slots = batch["ibot_patches"].shape[-1]
  assert out["ibot_patch"].shape == (B, 2, slots, batches.HEADS["ibot_head"]["prototypes"])
  assert out["global_pooled"].shape == (B, 2, 32)
  assert np.abs(out["dino_global"]).max() <= 1 + 1e-5  # cosines with unit prototypes
  # Without local crops in the batch: DINO on the two global crops alone.
  no_local = {k: v for k, v in batch.items() if k != "local_crops"}
  assert _call(model, no_local, needs=frozenset({"dino_local"}))["dino_local"].shape == (B, 0,
                                                                                       prototypes)
  # iBOT's student never sees the pixels of its hidden patches; the teacher sees every patch.
  hidden = np.zeros((B, N), np.float32)
  for row, patches in enumerate(np.asarray(batch["ibot_patches"][:, 0])):
    hidden[row, patches[patches >= 0]] = 1
  assert hidden.any()
  repainted = dict(batch, image=batch["image"] + 5.0 * _pixels(hidden))
  student = frozenset({"dino_global", "ibot_patch", "global_pooled"})
  for key in student:
    np.testing.assert_allclose(_call(model, repainted, needs=student)[key], out[key], atol=1e-5)
  teach = nnx.jit(lambda m, b: forward.teacher_outputs(m, b, frozenset({"dino_global"})))
  assert not np.allclose(teach(model, repainted)["dino_global"],
                         teach(model, batch)["dino_global"], atol=1e-4)
  # Without iBOT the global crops are encoded in full, in the pass the view embeddings share.
  full = _call(model, batch, needs=frozenset({"dino_global", "view_emb"}))["dino_global"]
  np.testing.assert_allclose(full, teach(model, batch)["dino_global"], atol=1e-5)


def test_fusion_lets_each_masked_modality_read_the_other(model, fused, batch):
  needs = frozenset({"mlm_logits", "mae_pred"})
  kept = 1 - _call(model, batch, needs=frozenset({"mae_mask"}))["mae_mask"]
  image = batch["image"] + _pixels(kept)
  text = batch["mlm_ids"].at[:, 0].set(3)
  for m, crosses in ((model, False), (fused, True)):
    out = _call(m, batch, needs=needs)
    by_image = _call(m, dict(batch, image=image), needs=needs)
    by_text = _call(m, dict(batch, mlm_ids=text), needs=needs)
    assert np.allclose(out["mlm_logits"], by_image["mlm_logits"], atol=1e-5) != crosses
    assert np.allclose(out["mae_pred"], by_text["mae_pred"], atol=1e-5) != crosses
  assert "fusion" not in nnx.to_pure_dict(nnx.state(model))
  assert fused.fusion.image_in.kernel.shape == (32, 32)


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


def test_decode_gives_next_token_logits_from_image_or_text(model, batch):
  tokens, _ = model.encode_image(batch["image"])
  logits = model.decode(batch["text_ids"], batch["text_mask"], tokens)
  assert logits.shape == (B, T, VOCAB) and logits.dtype == jnp.float32
  # One position's logits (step-by-step decoding) are that slice of the full ones.
  np.testing.assert_allclose(model.decode(batch["text_ids"], batch["text_mask"], tokens, at=3),
                             logits[:, 3], rtol=1e-5, atol=1e-5)
  states, _ = model.encode_text(batch["sr_context_ids"], batch["sr_context_mask"])
  logits = model.decode_from_text(batch["sr_target_ids"], batch["sr_target_mask"], states,
                                  batch["sr_context_mask"])
  assert logits.shape == (B, TS, VOCAB)


def test_depth_zero_builds_no_decoder_and_no_mae_decoder(batch):
  cfg = tiny_config()
  cfg.decoder.depth = cfg.mae_decoder.depth = 0
  model = nnx.eval_shape(lambda: MedMLLM(cfg, rngs=nnx.Rngs(0)))
  params = nnx.to_pure_dict(nnx.state(model))
  assert not {"decoder", "image_to_decoder", "text_to_decoder", "mae_decoder"} & set(params)
  with pytest.raises(ValueError, match="no text decoder"):
    model.decode(jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), bool), jnp.zeros((1, 16, 32)))
  with pytest.raises(ValueError, match="no MAE decoder"):
    nnx.eval_shape(lambda m: m(batch, needs=frozenset({"mae_pred"})), model)


def test_bfloat16_runs_and_returns_float32(model, batch):
  bf16 = _variant(model, dtype="bfloat16")
  out = _call(bf16, batch)
  reference = _call(model, batch)
  assert nnx.eval_shape(lambda m: m.encode_image(batch["image"]), bf16)[0].dtype == jnp.bfloat16
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
    got = jax.jit(lambda p, b: nnx.merge(graphdef, p)(b, needs=PAIR))(params, sharded_batch)
  want = _call(model, batch)
  for key in want:
    np.testing.assert_allclose(got[key], want[key], atol=2e-5)


def test_split_then_merge_from_a_pure_dict_round_trips(model, batch):
  graphdef, state = nnx.split(model)
  merged = nnx.merge(graphdef, nnx.to_pure_dict(state))
  got, want = _call(merged, batch), _call(model, batch)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key])


def test_remat_checkpoints_every_block_of_every_tower(fused, batch):
  # That a checkpointed block gives the same values and grads is tested on layers.Stack
  # (test_layers); here: the flag reaches all towers, each scanned body is checkpointed once.
  def grad_jaxpr(model):
    graphdef, state = nnx.split(model)

    def loss(state):
      out = nnx.merge(graphdef, state)(batch, needs=OUTPUTS)
      arrays = [v.full() if isinstance(v, TiedLogits) else v for k, v in out.items()
                if k != "mae_mask"]
      return sum(jnp.mean(v ** 2) for v in arrays)

    return str(jax.make_jaxpr(jax.grad(loss))(state))

  # Stack passes: image (both views at once), the same with iBOT's hidden patches, local crops,
  # MAE encoder, text encoder (all texts at once), decoder for captions, decoder for
  # sentences, fusion, MAE decoder.
  fusion = dict(depth=1, heads=2, mlp_dim=64)
  assert grad_jaxpr(_variant(fused, remat="full", fusion=fusion)).count("remat2[") == 9
  assert "remat" not in grad_jaxpr(fused)


def test_param_count_agrees_for_real_abstract_and_pure_states(model):
  state = nnx.state(model)
  count = param_count(state)
  assert count == sum(np.size(x) for x in jax.tree.leaves(nnx.to_pure_dict(state)))
  abstract = nnx.eval_shape(lambda: MedMLLM(tiny_config(), rngs=nnx.Rngs(0)))
  assert param_count(nnx.state(abstract)) == count
  heads = 2 * 32 * PROJ
  assert param_count(nnx.state(model.image_head)) + param_count(nnx.state(model.text_head)) == heads
