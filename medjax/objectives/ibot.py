"""iBOT masked-patch self-distillation (Zhou et al. 2022, as in DINOv2 / RAD-DINO).

The student encodes each global crop with some patches hidden (batch['ibot_patches'], replaced
by a learned mask token); the EMA teacher encodes the full crop. At each hidden patch the
student's iBOT-head logits are trained towards the teacher's centred, sharpened ones there.
Per crop the cross-entropy is averaged over its hidden patches, then over every global crop of
the rows with an image; a crop with no hidden patch adds 0, as in iBOT and DINOv2. The patch
centre (an EMA over the hidden patches of the global batch) is state, as DINO's.
"""
import jax
import jax.numpy as jnp

from medjax.contract import NO_PATCH
from medjax.objectives import _common

NEEDS = ("ibot_patch", "teacher/ibot_patch")
REQUIRES = ("model.ibot_head.prototypes", "data.ibot_mask_probability")


def validate(cfg) -> None:
  _common.check_self_distillation("ibot", cfg)


def init_state(params) -> dict:
  return {"center": jnp.zeros(params["ibot_head"]["prototypes"].shape[1:], jnp.float32)}


def _hidden(batch) -> jax.Array:
  """[B, 2, M] float32: 1 at the used slots of batch['ibot_patches'] of rows with an image."""
  used = batch["ibot_patches"] != NO_PATCH
  return (used & batch["has_image"][:, None, None]).astype(jnp.float32)


def update_state(state, outputs, batch, cfg) -> dict:
  return {"center": _common.ema_center(state["center"], outputs["teacher/ibot_patch"],
                                       _hidden(batch), cfg.center_momentum)}


def loss(outputs, batch, cfg):
  tau = _common.teacher_temperature(cfg, outputs[_common.STAGE_STEP])
  center = outputs[_common.state_key("ibot")]["center"]
  targets = _common.teacher_targets(outputs["teacher/ibot_patch"], center, tau)  # [B, 2, M, P]
  logp = jax.nn.log_softmax(outputs["ibot_patch"].astype(jnp.float32) / cfg.tau_student, -1)
  ce = -jnp.sum(targets * logp, axis=-1)  # [B, 2, M]
  hidden = _hidden(batch)
  count = jnp.sum(hidden, axis=-1)
  per_crop = jnp.sum(jnp.where(hidden > 0, ce, 0.0), axis=-1) / jnp.maximum(count, 1.0)
  crops = jnp.broadcast_to(batch["has_image"][:, None], per_crop.shape)
  entropy = -jnp.sum(targets * jnp.log(targets + 1e-12), axis=-1)
  return _common.weighted_mean(per_crop, crops), {
      "hidden_patches": jnp.sum(hidden), "teacher_temp": tau,
      "teacher_entropy": _common.weighted_mean(entropy, hidden)}
