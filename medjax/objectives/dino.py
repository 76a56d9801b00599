"""DINO self-distillation (Caron et al. 2021, as in DINOv2 / RAD-DINO) over the GLOBAL batch.

The EMA teacher sees the two global crops (`image`, `image2`); its DINO-head logits, centred and
sharpened, are the targets of the student's logits on every other crop: the other global crop
and each local crop. The loss is the cross-entropy averaged over those 2 (1 + L) pairs and over
the rows with an image. medjax's ViT has no class token: the mean-pooled feature stands in for
DINO's [CLS]. The centre, an EMA of the teacher's logits over the global batch, is state in the
train state (`init_state`, `update_state`); centring uses softmax and a centre (DINO), not
DINOv2's Sinkhorn-Knopp.
"""
import jax
import jax.numpy as jnp

from medjax.objectives import _common

NEEDS = ("dino_global", "dino_local", "teacher/dino_global")
REQUIRES = ("model.dino_head.prototypes",)  # config fields that must be > 0 when active


def validate(cfg) -> None:
  _common.check_self_distillation("dino", cfg)


def init_state(params) -> dict:
  return {"center": jnp.zeros(params["dino_head"]["prototypes"].shape[1:], jnp.float32)}


def update_state(state, outputs, batch, cfg) -> dict:
  """The centre moves towards this step's mean teacher logits over both global crops."""
  return {"center": _common.ema_center(state["center"], outputs["teacher/dino_global"],
                                       batch["has_image"][:, None], cfg.center_momentum)}


def loss(outputs, batch, cfg):
  """mean over rows with an image of (1 / pairs) sum over global crops i and crops j != i of
  H(teacher_i, student_j), H(t, s) = -sum_k t_k log softmax(s / tau_student)_k."""
  tau = _common.teacher_temperature(cfg, outputs[_common.STAGE_STEP])
  center = outputs[_common.state_key("dino")]["center"]
  targets = _common.teacher_targets(outputs["teacher/dino_global"], center, tau)  # [B, 2, P]
  student = jnp.concatenate([outputs["dino_global"], outputs["dino_local"]], axis=1)
  logp = jax.nn.log_softmax(student.astype(jnp.float32) / cfg.tau_student, axis=-1)
  ce = -jnp.einsum("bip,bjp->bij", targets, logp)  # [B, 2 global, 2 + L crops]
  crops = student.shape[1]
  pairs = jnp.arange(crops)[None, :] != jnp.arange(2)[:, None]  # a crop is not its own target
  per_row = jnp.sum(jnp.where(pairs, ce, 0.0), axis=(1, 2)) / jnp.sum(pairs)
  rows = batch["has_image"]
  entropy = -jnp.sum(targets * jnp.log(targets + 1e-12), axis=-1)  # collapse: -> 0 or log P
  return _common.weighted_mean(per_row, rows), {
      "teacher_temp": tau,
      "teacher_entropy": _common.weighted_mean(entropy, jnp.broadcast_to(rows[:, None], (
          entropy.shape)))}
