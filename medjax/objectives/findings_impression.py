"""Findings-impression alignment: symmetric InfoNCE between the pooled (projected) embeddings of
the Findings and the Impression of the same report, over the GLOBAL batch."""
import jax.numpy as jnp

from medjax.objectives import _common

NEEDS = ("findings_emb", "impression_emb")


def loss(outputs, batch, cfg):
  """Rows without both sections are left out of numerators and denominators alike."""
  valid = batch["has_findings_impression"].astype(bool)
  logits = jnp.einsum("id,jd->ij", outputs["findings_emb"], outputs["impression_emb"],
                      preferred_element_type=jnp.float32) / cfg.tau
  f2i, i2f, f2i_top1, i2f_top1 = _common.info_nce(logits, valid)
  return 0.5 * (f2i + i2f), {"f2i_top1": f2i_top1, "i2f_top1": i2f_top1,
                             "pairs": jnp.sum(valid)}
