"""Every objective's loss and parameter gradients on a data=2 x fsdp=4 mesh of 8 (fake) devices
equal those on one device for the same global batch.

This is what makes the contrastive losses global-batch losses: with the batch split 8 ways, only
XLA's gathers can give each row the negatives and positives held by other devices. One tiny model
(with fusion, so the M3AE path is covered too) and one jitted function returning all per-objective
losses and their Jacobian keep this to two compiles (XLA optimisations off: conftest.py).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from medjax import objectives, sharding
from medjax.configs import base
from medjax.models.medmllm import MedMLLM

import batches


def _config():
  return batches.config(batch_size=16, fusion=dict(depth=1))


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

  def per_objective(params, batch):
    outputs = nnx.merge(graphdef, params)(batch, needs=objectives.needs(config))
    values = [objectives._module(name).loss(outputs, batch, config[name])[0]
              for name in objectives.NAMES]
    return jnp.stack(values), jnp.stack(values)

  # Jacobian rows = gradients of each objective's loss w.r.t. every parameter.
  losses_and_grads = jax.jacrev(per_objective, has_aux=True)
  want_grads, want = jax.jit(losses_and_grads)(params, batch)

  mesh = sharding.make_mesh({"data": 2, "fsdp": 4, "tensor": 1}, jax.devices()[:8])
  logical = nnx.to_pure_dict(nnx.get_partition_spec(state))
  param_shardings = sharding.param_shardings(params, logical, mesh)
  kernel = jax.device_put(params, param_shardings)["text"]["blocks"]["layers"]["mlp"]["up"]
  assert kernel["kernel"].sharding.spec[1] == "fsdp"  # params really are split
  with jax.set_mesh(mesh):
    step = jax.jit(losses_and_grads, in_shardings=(param_shardings, sharding.batch_sharding(mesh)))
    got_grads, got = step(jax.device_put(params, param_shardings),
                          jax.device_put(batch, sharding.batch_sharding(mesh)))

  for i, name in enumerate(objectives.NAMES):
    assert np.isfinite(want[i]) and want[i] > 0, name  # a real loss, or equality proves nothing
    np.testing.assert_allclose(got[i], want[i], atol=1e-4, err_msg=name)
    grad_want = jax.tree.leaves(jax.tree.map(lambda g: g[i], want_grads))
    grad_got = jax.tree.leaves(jax.tree.map(lambda g: g[i], got_grads))
    assert max(float(jnp.abs(g).max()) for g in grad_want) > 1e-3, name
    for w, g in zip(grad_want, grad_got, strict=True):
      np.testing.assert_allclose(g, w, atol=1e-4, err_msg=name)
