import jax.numpy as jnp
import ml_collections
import numpy as np

from medjax.configs import base
from medjax.train import optimizer


def test_schedule_warms_up_then_decays_to_end_fraction():
  cfg = base.get_config().optim
  cfg.lr, cfg.warmup_steps, cfg.end_lr_fraction = 1e-3, 10, 0.1
  sched = optimizer.schedule(cfg, 100)
  assert float(sched(0)) == 0.0
  np.testing.assert_allclose(sched(10), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(sched(100), 1e-4, rtol=1e-5)
  assert float(sched(50)) < 1e-3


def test_no_weight_decay_on_vectors_and_clipping():
  cfg = ml_collections.ConfigDict(base.get_config().optim)
  cfg.lr, cfg.warmup_steps, cfg.weight_decay = 1.0, 0, 0.5
  tx = optimizer.make(cfg, 10)
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
  zero = {"w": jnp.zeros((2, 2)), "b": jnp.zeros((2,))}
  updates, _ = tx.update(zero, tx.init(params), params)
  assert float(jnp.abs(updates["b"]).max()) == 0.0  # vectors: no decay
  assert float(jnp.abs(updates["w"]).max()) > 0.0  # matrices: decayed
  # Clipping: a huge gradient gives the same first Adam step as a small one.
  big = {"w": 1e6 * jnp.ones((2, 2)), "b": jnp.zeros((2,))}
  small = {"w": 1e-1 * jnp.ones((2, 2)), "b": jnp.zeros((2,))}
  cfg.weight_decay = 0.0
  tx = optimizer.make(cfg, 10)
  ub, _ = tx.update(big, tx.init(params), params)
  us, _ = tx.update(small, tx.init(params), params)
  np.testing.assert_allclose(ub["w"], us["w"], rtol=1e-4)
