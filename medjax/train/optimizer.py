"""AdamW with linear warmup, cosine decay and global-norm clipping, and the rule that a param
a step's loss does not read stays as it is."""
import jax
import optax
from jax.extend import core


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


def read_leaves(fn, params, *args):
  """A pytree like `params` of Python bools: whether `fn(params, *args)` reads each leaf, from
  fn's jaxpr at trace time: static, so it costs a step nothing at run time (a test of the
  gradients would cost a reduction, across devices, per leaf)."""
  jaxpr = jax.make_jaxpr(fn)(params, *args).jaxpr
  used = {v for eqn in jaxpr.eqns for v in eqn.invars if isinstance(v, core.Var)}
  used |= {v for v in jaxpr.outvars if isinstance(v, core.Var)}
  leaves, treedef = jax.tree.flatten(params)
  return jax.tree.unflatten(treedef, [v in used for v in jaxpr.invars[:len(leaves)]])


def keep_unread(tx, read, new_params, params, new_opt_state, opt_state):
  """-> (params, opt_state) after a step, where every param leaf the step's loss does not read
  (`read`, from `read_leaves`: a module none of the stage's objectives uses) keeps its value and
  its Adam moments. Without this AdamW goes on moving it by the momentum of an earlier stage
  (about 1 / (1 - b1) steps of its last update) and by weight decay: a text stage would drift
  the image tower. Non-param state (the step count) advances as usual."""
  state_read = optax.tree_utils.tree_map_params(tx, lambda _, r: r, new_opt_state, read,
                                                transform_non_params=lambda _: True)
  pick = lambda r, new, old: new if r else old
  return (jax.tree.map(pick, read, new_params, params),
          jax.tree.map(pick, state_read, new_opt_state, opt_state))
