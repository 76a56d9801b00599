"""Every objective's loss and parameter gradients on a data=2 x fsdp=4 mesh of 8 (fake) devices
equal those on one device for the same global batch.

This is what makes the contrastive losses global-batch losses: with the batch split 8 ways, only
XLA's gathers can give each row the negatives and positives held by other devices. One tiny model
(with fusion, so the M3AE path is covered too, and the self-distillation heads, with local crops,
hidden patches, an EMA teacher that differs from the student and non-zero centres) and one jitted
function returning all per-objective losses and their Jacobian keep this to two compiles (XLA
optimisations off: conftest.py).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from medjax import objectives, sharding
from medjax.configs import base
from medjax.models.forward import TEACHER_OUTPUTS
from medjax.models.medmllm import MedMLLM
from medjax.train import step as step_lib

import batches


def _config():
  return batches.config(batch_size=16, fusion=dict(depth=1), data=batches.MULTI_CROP,
                        objectives=dict(dino=1.0, ibot=1.0), **batches.HEADS)


def test_every_objective_matches_one_device_on_a_data_fsdp_mesh():
  if jax.device_count() < 8:
    pytest.skip("needs 8 (fake) devices, see tests/conftest.py")
  config = base.get_config().objectives
  for name in objectives.NAMES:
    config[name].weight = 1.0
  cfg = _config()
  graphdef, state = nnx.split(MedMLLM(cfg.model, rngs=nnx.Rngs(0)))
  params = nnx.to_pure_dict(state)
  batch = batches.random_batch(cfg)  # every contract key, rows missing each kind of input
  rng = np.random.default_rng(1)
  modules = {m for n in objectives.teacher_needs(config) for m in TEACHER_OUTPUTS[n]}
  teacher = jax.tree.map(lambda x: x + 0.1 * rng.standard_normal(x.shape).astype(x.dtype),
                         {m: params[m] for m in modules})
  states = jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(x.dtype),
                        {n: objectives.init_state(n, params) for n in objectives.stateful(config)})

  def per_objective(params, batch, teacher, states):
    inputs = step_lib.objective_inputs(graphdef, config, params, teacher, states, batch, 7)
    outputs = dict(nnx.merge(graphdef, params)(batch, needs=objectives.needs(config)), **inputs)
    values = [objectives._module(name).loss(outputs, batch, config[name])[0]
              for name in objectives.NAMES]
    # What the train step updates besides the params: the centres (means over the global
    # batch) and the EMA teacher.
    updates = dict(states=objectives.update_states(states, inputs, batch, config),
                   teacher=step_lib.ema(teacher, params, 0.9))
    return jnp.stack(values), (jnp.stack(values), updates)

  # Jacobian rows = gradients of each objective's loss w.r.t. every parameter.
  losses_and_grads = jax.jacrev(per_objective, has_aux=True)
  want_grads, (want, want_updates) = jax.jit(losses_and_grads)(params, batch, teacher, states)

  mesh = sharding.make_mesh({"data": 2, "fsdp": 4, "tensor": 1}, jax.devices()[:8])
  logical = nnx.to_pure_dict(nnx.get_partition_spec(state))
  param_shardings = sharding.param_shardings(params, logical, mesh)
  kernel = jax.device_put(params, param_shardings)["text"]["blocks"]["layers"]["mlp"]["up"]
  assert kernel["kernel"].sharding.spec[1] == "fsdp"  # params really are split
  teacher_shardings = {m: param_shardings[m] for m in teacher}
  with jax.set_mesh(mesh):
    step = jax.jit(losses_and_grads, in_shardings=(param_shardings, sharding.batch_sharding(mesh),
                                                   teacher_shardings, None))
    got_grads, (got, got_updates) = step(jax.device_put(params, param_shardings),
                                         jax.device_put(batch, sharding.batch_sharding(mesh)),
                                         jax.device_put(teacher, teacher_shardings), states)

  for name in ("dino", "ibot"):  # the centres moved (by a mean over rows on all devices)
    assert np.abs(want_updates["states"][name]["center"] - states[name]["center"]).max() > 1e-3
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, atol=1e-4), got_updates,
               want_updates)

  for i, name in enumerate(objectives.NAMES):
    assert np.isfinite(want[i]) and want[i] > 0, name  # a real loss, or equality proves nothing
    np.testing.assert_allclose(got[i], want[i], atol=1e-4, err_msg=name)
    grad_want = jax.tree.leaves(jax.tree.map(lambda g: g[i], want_grads))
    grad_got = jax.tree.leaves(jax.tree.map(lambda g: g[i], got_grads))
    assert max(float(jnp.abs(g).max()) for g in grad_want) > 1e-3, name
    for w, g in zip(grad_want, grad_got, strict=True):
      np.testing.assert_allclose(g, w, atol=1e-4, err_msg=name)
