"""Patient-level contrastive learning: supervised contrastive loss (Khosla et al. 2020, the
L_out form) with the patient as the label, over the GLOBAL batch.

All other images of the same patient are positives, all other images are the denominator. A row
whose patient has no other image in the batch has nothing to pull towards: it is no anchor (it
still serves as a negative for the others), and the metrics count such rows so a sampler that
stops pairing patients is noticed.
"""
import jax.numpy as jnp

from medjax.objectives import _common

NEEDS = ("view_emb",)


def loss(outputs, batch, cfg):
  """Mean over anchors of -1/|P(i)| sum_{p in P(i)} log softmax_i(z_i . z_p / tau)."""
  z = outputs["view_emb"]
  valid = batch["has_image"].astype(bool)
  patient = batch["patient"]
  n = z.shape[0]
  logits = jnp.einsum("id,jd->ij", z, z, preferred_element_type=jnp.float32) / cfg.tau
  others = valid[None, :] & ~jnp.eye(n, dtype=bool)
  positives = others & (patient[:, None] == patient[None, :])
  count = jnp.sum(positives, axis=1)
  logp = _common.masked_log_softmax(logits, others, axis=1)
  per_row = -jnp.sum(jnp.where(positives, logp, 0.0), axis=1) / jnp.maximum(count, 1)
  anchor = valid & (count > 0)
  return _common.weighted_mean(per_row, anchor), {
      "anchors": jnp.sum(anchor), "without_positive": jnp.sum(valid & (count == 0))}
