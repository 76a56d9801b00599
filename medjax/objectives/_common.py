"""Masked reductions shared by the objectives.

Rows an objective cannot use (no image, no second sentence, ...) are switched off with weights,
never removed: shapes stay static under jit, and sharded and single-device runs see the same
global arrays. Every reduction here is 0, not NaN, when nothing is left to average.
"""
import jax
import jax.numpy as jnp
import optax

from medjax.models.layers import l2_normalize  # noqa: F401  (the objectives' one)
from medjax.models.text import TiedLogits

# Stands in for -inf in masked logits: exp() of it is exactly 0, yet 0 * NEG is 0, not NaN.
NEG = -1e9


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  """sum(w * v) / sum(w); 0 when every weight is 0. Entries with weight 0 are dropped before
  multiplying, so a non-finite value there cannot reach the result."""
  weights = weights.astype(jnp.float32)
  total = jnp.sum(weights)
  kept = jnp.where(weights > 0, values.astype(jnp.float32) * weights, 0.0)
  return jnp.sum(kept) / jnp.where(total > 0, total, 1.0)


def masked_log_softmax(logits: jax.Array, valid: jax.Array, axis: int) -> jax.Array:
  """log_softmax over the entries where ``valid`` (broadcastable to logits) only."""
  return jax.nn.log_softmax(jnp.where(valid, logits, NEG), axis=axis)


def info_nce(logits: jax.Array, valid: jax.Array):
  """Both directions of InfoNCE on square logits [B, B] whose positives are the diagonal,
  restricted to valid rows and columns: an invalid row is neither an anchor nor a candidate.
  -> (row loss, column loss, row top-1, column top-1), each averaged over valid rows."""
  labels = jnp.arange(logits.shape[0])
  row_logp = masked_log_softmax(logits, valid[None, :], axis=1)
  col_logp = masked_log_softmax(logits, valid[:, None], axis=0)
  row_top1 = jnp.argmax(jnp.where(valid[None, :], logits, NEG), axis=1) == labels
  col_top1 = jnp.argmax(jnp.where(valid[:, None], logits, NEG), axis=0) == labels
  return (weighted_mean(-jnp.diagonal(row_logp), valid),
          weighted_mean(-jnp.diagonal(col_logp), valid),
          weighted_mean(row_top1, valid), weighted_mean(col_top1, valid))


def token_cross_entropy(logits, targets: jax.Array, weights: jax.Array):
  """Cross-entropy of logits [B, T, V] (an array, or the model's TiedLogits) against int targets
  [B, T], averaged with per-token weights. -> (loss, accuracy, sum of weights)."""
  ce, correct = _per_token(logits, targets)
  return weighted_mean(ce, weights), weighted_mean(correct, weights), jnp.sum(weights)


def _ce_and_hits(logits: jax.Array, targets: jax.Array):
  logits = logits.astype(jnp.float32)
  return (optax.softmax_cross_entropy_with_integer_labels(logits, targets),
          jnp.argmax(logits, axis=-1) == targets)


def _per_token(logits, targets):
  """(cross-entropy, argmax hit) per position [B, T]. TiedLogits with chunk c > 0: c positions
  at a time in a loop whose body is rematerialised, so only [B, c, V] logits exist at once, in
  the forward and the backward pass (positions padded up to a multiple of c, then dropped)."""
  if not isinstance(logits, TiedLogits):
    return _ce_and_hits(logits, targets)
  b, t = targets.shape
  c = logits.chunk
  if not 0 < c < t:
    return _ce_and_hits(logits.full(), targets)
  n = -(-t // c)
  states = jnp.pad(logits.states, ((0, 0), (0, n * c - t), (0, 0)))
  targets = jnp.pad(targets, ((0, 0), (0, n * c - t)))
  # [n, B, c, ...]: the loop runs over chunks of positions; the batch axis keeps its sharding.
  states = states.reshape(b, n, c, -1).swapaxes(0, 1)
  targets = targets.reshape(b, n, c).swapaxes(0, 1)
  chunk = jax.checkpoint(lambda s, y: _ce_and_hits(logits.project(s), y))
  ce, hits = jax.lax.map(lambda args: chunk(*args), (states, targets))
  unchunk = lambda x: x.swapaxes(0, 1).reshape(b, n * c)[:, :t]
  return unchunk(ce), unchunk(hits)


def next_token_cross_entropy(logits: jax.Array, ids: jax.Array, mask: jax.Array,
                             rows: jax.Array):
  """Teacher forcing: the logit at t predicts token t + 1, for real target tokens (mask) of the
  rows with ``rows`` True. `logits` as in token_cross_entropy. -> (loss, accuracy, number of
  target tokens)."""
  weights = mask[:, 1:].astype(jnp.float32) * rows.astype(jnp.float32)[:, None]
  return token_cross_entropy(logits[:, :-1], ids[:, 1:], weights)


# Keys the train step adds to `outputs` besides the model's (medjax/train/step.py).
STAGE_STEP = "stage_step"  # int32 scalar: steps of the current stage done before this one


def state_key(name: str) -> str:
  """`outputs` key of an objective's state before this step (objectives with `init_state`)."""
  return f"{name}/state"


def teacher_targets(logits: jax.Array, center: jax.Array, tau: jax.Array) -> jax.Array:
  """DINO's teacher distribution: softmax of the centred logits over the temperature (float32).
  Centring keeps one prototype from winning every image; the low temperature sharpens, and the
  two together keep the teacher from collapsing to a constant or a uniform output."""
  return jax.nn.softmax((logits.astype(jnp.float32) - center) / tau, axis=-1)


def teacher_temperature(cfg, stage_step: jax.Array) -> jax.Array:
  """Linear warm-up from cfg.tau_teacher_start to cfg.tau_teacher over the stage's first
  cfg.warmup_steps steps (0 steps: tau_teacher from the start), then constant."""
  if not cfg.warmup_steps:
    return jnp.asarray(cfg.tau_teacher, jnp.float32)
  progress = jnp.clip(jnp.asarray(stage_step, jnp.float32) / cfg.warmup_steps, 0.0, 1.0)
  return cfg.tau_teacher_start + (cfg.tau_teacher - cfg.tau_teacher_start) * progress


def ema_center(center: jax.Array, logits: jax.Array, weights: jax.Array,
               momentum: float) -> jax.Array:
  """center * momentum + (1 - momentum) * the weighted mean of `logits` [..., P] over all but
  the last axis (the GLOBAL batch under jit); unchanged when every weight is 0."""
  weights = jnp.broadcast_to(weights.astype(jnp.float32), logits.shape[:-1])
  total = jnp.sum(weights)
  kept = jnp.where(weights[..., None] > 0, logits.astype(jnp.float32) * weights[..., None], 0.0)
  mean = jnp.sum(kept.reshape(-1, logits.shape[-1]), axis=0) / jnp.where(total > 0, total, 1.0)
  return jnp.where(total > 0, momentum * center + (1 - momentum) * mean, center)


def check_self_distillation(name: str, cfg) -> None:
  """The options dino and ibot share: centre momentum in [0, 1), warm-up steps >= 0."""
  m = cfg.center_momentum
  if not (isinstance(m, (int, float)) and not isinstance(m, bool) and 0 <= m < 1):
    raise ValueError(f"config.objectives.{name}.center_momentum = {m!r}: must be in [0, 1)")
  w = cfg.warmup_steps
  if not (isinstance(w, int) and not isinstance(w, bool) and w >= 0):
    raise ValueError(f"config.objectives.{name}.warmup_steps = {w!r}: must be an integer >= 0")
