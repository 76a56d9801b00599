"""The paper recipes (configs/convirt.py, m3ae.py, mae_cxr.py): their objectives, and that the
model they build can compute everything those objectives read (traced abstractly, no compile)."""
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from configs import convirt, m3ae, mae_cxr
from medjax import objectives
from medjax.models.medmllm import MedMLLM

RECIPES = {
    convirt: {"image_text"},
    m3ae: {"mlm", "mae"},
    mae_cxr: {"mae"},
}


def _abstract_batch(config, entities=8):
  """ShapeDtypeStructs of the docs/contracts.md batch for this config."""
  b, s, t, ts = (config.batch_size, config.data.image_size, config.data.text_len,
                 config.data.sentence_len)
  n = (s // config.model.image.patch_size) ** 2
  spec = jax.ShapeDtypeStruct
  ids, mask, flag = spec((b, t), jnp.int32), spec((b, t), jnp.bool_), spec((b,), jnp.bool_)
  return dict(
      image=spec((b, s, s, config.data.channels), jnp.float32),
      image2=spec((b, s, s, config.data.channels), jnp.float32),
      has_image=flag, has_text=flag, has_sentence=flag, has_findings_impression=flag,
      patient=spec((b,), jnp.int32), text_ids=ids, text_mask=mask, mlm_ids=ids,
      mlm_targets=ids, mlm_weights=spec((b, t), jnp.float32), sr_context_ids=ids,
      sr_context_mask=mask, sr_target_ids=spec((b, ts), jnp.int32),
      sr_target_mask=spec((b, ts), jnp.bool_), findings_ids=ids, findings_mask=mask,
      impression_ids=ids, impression_mask=mask,
      image_entities=spec((b, entities), jnp.float32),
      text_entities=spec((b, entities), jnp.float32), mae_noise=spec((b, n), jnp.float32))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda m: m.__name__.split(".")[-1])
def test_recipe_trains_its_objectives_and_the_model_supports_them(recipe):
  for arg in (None, "tiny"):
    config = recipe.get_config(arg)
    assert set(objectives.active(config.objectives)) == RECIPES[recipe]
  # Tiny: builds and traces the loss of exactly these objectives on the contract batch.
  model = nnx.eval_shape(lambda: MedMLLM(config.model, rngs=nnx.Rngs(0)))
  needs = objectives.needs(config.objectives)
  total, metrics = nnx.eval_shape(
      lambda m, b: objectives.total_loss(m(b, needs=needs), b, config.objectives),
      model, _abstract_batch(config))
  assert total.shape == () and {k.split("/")[0] for k in metrics} == RECIPES[recipe]
