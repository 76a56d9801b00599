"""The paper recipes (medjax/configs: convirt, m3ae, mae_cxr): their objectives, and that the
model they build can compute everything those objectives read (traced abstractly, no compile)."""
import pytest
from flax import nnx

from medjax import objectives
from medjax.configs import convirt, m3ae, mae_cxr, resolve
from medjax.models.medmllm import MedMLLM
from medjax.train import aot

RECIPES = {
    convirt: {"image_text"},
    m3ae: {"mlm", "mae"},
    mae_cxr: {"mae"},
}


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
      model, aot.abstract_batch(resolve.resolved(config)))
  assert total.shape == () and {k.split("/")[0] for k in metrics} == RECIPES[recipe]
