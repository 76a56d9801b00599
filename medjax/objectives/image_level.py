"""Image-level contrastive learning (SimCLR's NT-Xent, Chen et al. 2020) over the GLOBAL batch.

Each image comes as two augmented views; a view's positive is the other view of the same image,
its negatives are both views of every other image. Under jit the batch is global, so XLA
gathers the embeddings of all devices for the similarity matrix.
"""
import jax.numpy as jnp

from medjax.objectives import _common

NEEDS = ("view_emb", "view2_emb")


def loss(outputs, batch, cfg):
  """NT-Xent with temperature ``cfg.tau`` over the 2B views of the rows with has_image."""
  z = jnp.concatenate([outputs["view_emb"], outputs["view2_emb"]], axis=0)  # unit rows [2B, D]
  valid = jnp.concatenate([batch["has_image"], batch["has_image"]]).astype(bool)
  n = z.shape[0]
  logits = jnp.einsum("id,jd->ij", z, z, preferred_element_type=jnp.float32) / cfg.tau
  candidates = valid[None, :] & ~jnp.eye(n, dtype=bool)  # a view is never its own negative
  positive = (jnp.arange(n) + n // 2) % n
  logp = _common.masked_log_softmax(logits, candidates, axis=1)
  nll = -jnp.take_along_axis(logp, positive[:, None], axis=1)[:, 0]
  top1 = jnp.argmax(jnp.where(candidates, logits, _common.NEG), axis=1) == positive
  return _common.weighted_mean(nll, valid), {
      "top1": _common.weighted_mean(top1, valid), "images": jnp.sum(valid) // 2}
