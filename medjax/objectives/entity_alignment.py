"""Soft image-text alignment from medical entities, for paired and unpaired data alike (the
idea of MedCLIP, Wang et al. 2022): an image and a text that mention the same findings should
be close even when they come from different studies.

Target for anchor i = softmax over the other side's valid rows j of cos(e_i, e_j) / tau_target,
e = multi-hot entity vectors; loss = cross-entropy between softmax(image-text logits) and that
target, in both directions. An anchor with no entity has no similarity to go by: it falls back
to the identity target (its own pair), and is left out when it has no pair.
"""
import jax
import jax.numpy as jnp

from medjax.objectives import _common

NEEDS = ("image_emb", "text_emb", "logit_scale")


def _direction(logits, entities, other_entities, valid, other_valid, tau_target):
  """Cross-entropy per anchor row of logits [B, B] (columns = the other side) -> (mean, rows)."""
  n = logits.shape[0]
  cosine = _common.l2_normalize(entities) @ _common.l2_normalize(other_entities).T
  soft = jax.nn.softmax(jnp.where(other_valid[None, :], cosine / tau_target, _common.NEG), axis=1)
  no_entity = jnp.sum(entities, axis=1) <= 0
  target = jnp.where(no_entity[:, None], jnp.eye(n), soft)
  logp = _common.masked_log_softmax(logits, other_valid[None, :], axis=1)
  ce = -jnp.sum(jnp.where(other_valid[None, :], target * logp, 0.0), axis=1)
  usable = valid & jnp.any(other_valid) & (~no_entity | other_valid)
  return _common.weighted_mean(ce, usable), jnp.sum(usable)


def loss(outputs, batch, cfg):
  """Mean of the image->text and text->image directions; logits use the learned image-text
  temperature (capped at 100 as in image_text)."""
  scale = jnp.minimum(jnp.exp(outputs["logit_scale"]), 100.0)
  logits = scale * jnp.einsum("id,td->it", outputs["image_emb"], outputs["text_emb"],
                              preferred_element_type=jnp.float32)
  has_image, has_text = batch["has_image"].astype(bool), batch["has_text"].astype(bool)
  image_ents = batch["image_entities"].astype(jnp.float32)
  text_ents = batch["text_entities"].astype(jnp.float32)
  i2t, image_rows = _direction(logits, image_ents, text_ents, has_image, has_text,
                               cfg.tau_target)
  t2i, text_rows = _direction(logits.T, text_ents, image_ents, has_text, has_image,
                              cfg.tau_target)
  return 0.5 * (i2t + t2i), {"i2t": i2t, "t2i": t2i, "image_rows": image_rows,
                             "text_rows": text_rows}
