import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

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


def test_a_param_the_loss_does_not_read_keeps_its_value_and_moments():
  """Step 1 trains both towers, step 2 a loss that reads only `image` (as a stage whose
  objectives use one tower): plain AdamW would move `text` on by momentum and weight decay;
  `keep_unread` keeps it, and trains `image` as usual."""
  cfg = ml_collections.ConfigDict(base.get_config().optim)
  cfg.lr, cfg.warmup_steps = 1e-2, 0
  tx = optimizer.make(cfg, 10)
  params = {"image": {"w": jnp.ones((2, 3))}, "text": {"w": jnp.ones((3, 3)), "b": jnp.ones(3)}}
  both = lambda p, x: jnp.sum(p["image"]["w"] @ x) + jnp.sum(p["text"]["w"] @ x + p["text"]["b"])
  image_only = lambda p, x: jnp.sum(p["image"]["w"] @ x)
  x = jnp.arange(3.0)
  updates, state1 = tx.update(jax.grad(both)(params, x), tx.init(params), params)
  params1 = optax.apply_updates(params, updates)
  read = optimizer.read_leaves(image_only, params1, x)
  assert read == {"image": {"w": True}, "text": {"w": False, "b": False}}
  updates, state2 = tx.update(jax.grad(image_only)(params1, x), state1, params1)
  plain = optax.apply_updates(params1, updates)
  assert float(jnp.abs(plain["text"]["w"] - params1["text"]["w"]).min()) > 1e-4  # the drift
  got, kept = optimizer.keep_unread(tx, read, plain, params1, state2, state1)
  np.testing.assert_array_equal(got["text"]["w"], params1["text"]["w"])
  np.testing.assert_array_equal(got["text"]["b"], params1["text"]["b"])
  np.testing.assert_array_equal(got["image"]["w"], plain["image"]["w"])  # trained as usual
  adam = kept[1][0]  # chain(clip, adamw): adamw's scale_by_adam state
  np.testing.assert_array_equal(adam.mu["text"]["w"], state1[1][0].mu["text"]["w"])
  np.testing.assert_array_equal(adam.nu["text"]["b"], state1[1][0].nu["text"]["b"])
  np.testing.assert_array_equal(adam.mu["image"]["w"], state2[1][0].mu["image"]["w"])
  assert int(adam.count) == 2  # the step count (bias correction, schedule) goes on
