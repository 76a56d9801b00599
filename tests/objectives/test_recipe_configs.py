"""The paper recipes (medjax/configs: convirt, m3ae, mae_cxr, rad_dino): their objectives, and
that the model they build can compute everything those objectives read (traced abstractly, no
compile), the EMA teacher's outputs and objective states included."""
import jax
import pytest

from medjax import objectives, sharding
from medjax.configs import convirt, m3ae, mae_cxr, rad_dino, resolve
from medjax.train import aot, stages, state as state_lib, step as step_lib

RECIPES = {
    convirt: {"image_text"},
    m3ae: {"mlm", "mae"},
    mae_cxr: {"mae"},
    rad_dino: {"dino", "ibot", "koleo"},
}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda m: m.__name__.split(".")[-1])
def test_recipe_trains_its_objectives_and_the_model_supports_them(recipe):
  for arg in (None, "tiny"):
    config = recipe.get_config(arg)
    assert set(objectives.active(config.objectives)) == RECIPES[recipe]
  # Tiny: builds and traces the loss of exactly these objectives on the contract batch.
  config = resolve.resolved(config)
  ts = state_lib.setup(config, sharding.make_mesh(dict(data=1), jax.devices()[:1]))
  (stage,) = stages.plan(config)
  loss = step_lib.loss_fn(ts.graphdef, stage.objectives)

  def total(state, batch):
    inputs = step_lib.objective_inputs(ts.graphdef, stage.objectives, state["params"],
                                       state.get("teacher"), state.get("objectives", {}), batch,
                                       0)
    return loss(state["params"], batch, inputs)

  value, metrics = jax.eval_shape(total, ts.abstract_state, aot.abstract_batch(config))
  assert value.shape == () and {k.split("/")[0] for k in metrics} == RECIPES[recipe]
  assert ("teacher" in ts.abstract_state) == (recipe is rad_dino)  # no teacher unless needed
