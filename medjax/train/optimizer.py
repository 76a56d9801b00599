"""AdamW with linear warmup, cosine decay and global-norm clipping, and the rule that a param
with no gradient in a step stays as it is."""
import jax
import jax.numpy as jnp
import optax


def schedule(cfg, total_steps: int) -> optax.Schedule:
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.lr, warmup_steps=cfg.warmup_steps,
      decay_steps=max(total_steps, cfg.warmup_steps + 1), end_value=cfg.lr * cfg.end_lr_fraction)


def _decay_mask(params):
  # Weight decay on matrices only: decaying norms, biases and the temperature hurts training.
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make(cfg, total_steps: int) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(cfg.grad_clip),
      optax.adamw(schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2,
                  weight_decay=cfg.weight_decay, mask=_decay_mask),
  )


def keep_untouched(tx, grads, new_params, params, new_opt_state, opt_state):
  """-> (params, opt_state) after a step, where every param leaf whose gradient is exactly zero
  (a module none of the stage's objectives reads) keeps its value and its Adam moments. Without
  this AdamW goes on moving it: the momentum of an earlier stage (about 1 / (1 - b1) steps of
  its last update) and the weight decay, so a text stage would drift the image tower."""
  touched = jax.tree.map(lambda g: jnp.any(g != 0), grads)
  state_mask = optax.tree_utils.tree_map_params(tx, lambda _, t: t, new_opt_state, touched,
                                                transform_non_params=lambda _: True)
  return (jax.tree.map(jnp.where, touched, new_params, params),
          jax.tree.map(jnp.where, state_mask, new_opt_state, opt_state))
