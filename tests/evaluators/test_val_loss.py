"""The validation loss (medjax/evaluators/val_loss.py) of a self-distillation stage: it gives the
objectives what the train step gives them (the EMA teacher, DINO / iBOT centres, the stage step),
so it equals the step's own loss on the same batch."""
import jax
import numpy as np

from medjax import sharding
from medjax.configs import rad_dino, resolve
from medjax.evaluators import val_loss
from medjax.train import stages, state as state_lib, step as step_lib


def test_self_distillation_val_loss_is_the_train_steps_loss(covid_data_dir):
  c = rad_dino.get_config("tiny=True")
  c.data.dir = str(covid_data_dir)
  c = resolve.resolved(c)
  c.mesh = dict(data=1, fsdp=1, tensor=1)
  mesh = sharding.make_mesh(c.mesh, jax.devices()[:1])
  ts = state_lib.setup(c, mesh)
  state = state_lib.init(c, ts)
  stage = stages.plan(c)[0]
  assert {"dino", "ibot"} <= {n for n, o in stage.objectives.items() if o.weight > 0}
  ev = val_loss.Evaluator("val", c, mesh, ts, batches=1)
  got = ev.run(state, stage)
  (batch,) = ev._batches(stage)
  inputs, _, _ = step_lib.stage_inputs(ts, stage, state, batch)
  with jax.set_mesh(mesh):
    _, metrics = jax.jit(step_lib.loss_fn(ts.graphdef, stage.objectives))(
        state["params"], batch, inputs)
  for name in ("dino", "ibot", "koleo"):
    assert np.isfinite(got[f"val/{name}/loss"])
    np.testing.assert_allclose(got[f"val/{name}/loss"], float(metrics[f"{name}/loss"]),
                               rtol=1e-5)
