"""Paired image-text contrastive losses over the global batch: CLIP (softmax) and SigLIP (sigmoid).

Under `jit` the batch arrays are global, so the similarity matrix spans every device's examples;
XLA inserts the all-gathers. Positives are the diagonal (image i with the text of its own study).
"""
import jax
import jax.numpy as jnp
import optax


def _similarity(outputs):
  return jnp.einsum("id,td->it", outputs["image_emb"], outputs["text_emb"],
                    preferred_element_type=jnp.float32)


def clip_loss(outputs, cfg):
  """Symmetric InfoNCE (Radford et al. 2021); the learned temperature is capped at 100."""
  scale = jnp.minimum(jnp.exp(outputs["logit_scale"]), 100.0)
  logits = scale * _similarity(outputs)
  labels = jnp.arange(logits.shape[0])
  i2t = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  t2i = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()
  return 0.5 * (i2t + t2i), logits


def siglip_loss(outputs, cfg):
  """Pairwise sigmoid loss (Zhai et al. 2023): each (image, text) pair is a binary problem."""
  logits = jnp.exp(outputs["logit_scale"]) * _similarity(outputs) + outputs["logit_bias"]
  signs = 2.0 * jnp.eye(logits.shape[0]) - 1.0
  return -jnp.sum(jax.nn.log_sigmoid(signs * logits)) / logits.shape[0], logits


KINDS = {"clip": clip_loss, "siglip": siglip_loss}


def loss(outputs, batch, cfg):
  """Contrastive loss of `cfg.kind`, plus in-batch retrieval accuracy (top-1, both ways)."""
  del batch
  if cfg.kind not in KINDS:
    raise ValueError(f"objectives.image_text.kind={cfg.kind!r}; choose one of {sorted(KINDS)}")
  value, logits = KINDS[cfg.kind](outputs, cfg)
  labels = jnp.arange(logits.shape[0])
  return value, {
      "i2t_top1": jnp.mean(jnp.argmax(logits, axis=1) == labels),
      "t2i_top1": jnp.mean(jnp.argmax(logits, axis=0) == labels),
      "temperature": 1.0 / jnp.exp(outputs["logit_scale"]),
  }
