"""The jitted update step: forward, weighted objectives, clipped AdamW update, finite guard."""
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from medjax import objectives


def make_train_step(graphdef, tx, objectives_cfg):
  """Returns step(state, batch) -> (state, metrics) training the objectives weighted in
  `objectives_cfg` (config.objectives, or one stage's version of it). Jit it, state donated."""
  def loss_fn(params, batch):
    model = nnx.merge(graphdef, params)
    outputs = model(batch, needs=objectives.needs(objectives_cfg))
    return objectives.total_loss(outputs, batch, objectives_cfg)

  def step(state, batch):
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    grad_norm = optax.global_norm(grads)
    # A non-finite loss or gradient leaves params and optimizer untouched (and is counted); the
    # host loop stops the run after `max_nonfinite_in_row` such steps. So no NaN is ever saved.
    # (an update that overflows, e.g. from a bad learning rate, counts as non-finite too).
    finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm)
              & jnp.isfinite(optax.global_norm(updates)))
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = dict(
        step=state["step"] + 1,
        params=keep(params, state["params"]),
        opt_state=keep(opt_state, state["opt_state"]),
        nonfinite_in_row=jnp.where(finite, 0, state["nonfinite_in_row"] + 1),
        skipped_steps=state["skipped_steps"] + (~finite).astype(jnp.int32),
    )
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm,
                   param_norm=optax.global_norm(new_state["params"]),
                   skipped_steps=new_state["skipped_steps"])
    return new_state, metrics

  return step
