"""AdamW with linear warmup, cosine decay and global-norm clipping."""
import jax
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
