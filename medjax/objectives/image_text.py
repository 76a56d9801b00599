"""Paired image-text contrastive losses over the global batch: CLIP (softmax) and SigLIP (sigmoid).

Under `jit` the batch arrays are global, so the similarity matrix spans every device's examples;
XLA inserts the all-gathers. Positives are the diagonal (image i with the text of its own study).
Only real pairs (has_image & has_text) take part: an unpaired image or text is neither an anchor
nor a negative (entity_alignment is the objective that uses those).
"""
import jax
import jax.numpy as jnp

from medjax.objectives import _common

NEEDS = ("image_emb", "text_emb", "logit_scale", "logit_bias")


def _similarity(outputs):
  return jnp.einsum("id,td->it", outputs["image_emb"], outputs["text_emb"],
                    preferred_element_type=jnp.float32)


def _scale(outputs, cfg):
  """1 / tau for a fixed ``cfg.tau`` > 0, else the learned exp(logit_scale)."""
  return 1.0 / cfg.tau if cfg.tau > 0 else jnp.exp(outputs["logit_scale"])


def clip_loss(outputs, cfg, pairs):
  """InfoNCE both ways (Radford et al. 2021; ConVIRT, Zhang et al. 2020), image->text weighted
  by ``cfg.i2t_weight`` (0.5 = CLIP's symmetric mean, ConVIRT uses 0.75). The learned
  temperature is capped at 100."""
  logits = jnp.minimum(_scale(outputs, cfg), 100.0) * _similarity(outputs)
  i2t, t2i, i2t_top1, t2i_top1 = _common.info_nce(logits, pairs)
  return cfg.i2t_weight * i2t + (1.0 - cfg.i2t_weight) * t2i, i2t_top1, t2i_top1


def siglip_loss(outputs, cfg, pairs):
  """Pairwise sigmoid loss (Zhai et al. 2023): each (image, text) combination of the real
  pairs is a binary problem; the sum is divided by the number of pairs, as in the paper."""
  logits = _scale(outputs, cfg) * _similarity(outputs) + outputs["logit_bias"]
  signs = 2.0 * jnp.eye(logits.shape[0]) - 1.0
  both = pairs[:, None] & pairs[None, :]
  total = jnp.sum(jnp.where(both, -jax.nn.log_sigmoid(signs * logits), 0.0))
  labels = jnp.arange(logits.shape[0])
  masked = jnp.where(both, logits, _common.NEG)
  return (total / jnp.maximum(jnp.sum(pairs), 1),
          _common.weighted_mean(jnp.argmax(masked, axis=1) == labels, pairs),
          _common.weighted_mean(jnp.argmax(masked, axis=0) == labels, pairs))


KINDS = {"clip": clip_loss, "siglip": siglip_loss}


def validate(cfg) -> None:
  if cfg.kind not in KINDS:
    raise ValueError(f"config.objectives.image_text.kind = {cfg.kind!r}: one of {sorted(KINDS)}")
  if not 0 <= cfg.i2t_weight <= 1:
    raise ValueError(f"config.objectives.image_text.i2t_weight = {cfg.i2t_weight!r}: must be in "
                     "[0, 1]")


def loss(outputs, batch, cfg):
  """Contrastive loss of `cfg.kind`, plus in-batch retrieval accuracy (top-1, both ways)."""
  validate(cfg)
  pairs = batch["has_image"].astype(bool) & batch["has_text"].astype(bool)
  value, i2t_top1, t2i_top1 = KINDS[cfg.kind](outputs, cfg, pairs)
  return value, {"i2t_top1": i2t_top1, "t2i_top1": t2i_top1,
                 "temperature": 1.0 / _scale(outputs, cfg), "pairs": jnp.sum(pairs)}
