"""KoLeo regulariser (Sablayrolles et al. 2019, as in DINOv2): spreads the student's pooled
features (DINO's [CLS], here the mean-pooled ViT output) over the unit sphere.

For each global crop separately, every row with an image is l2-normalised and pays
-log(distance to its nearest other row), averaged over the rows; the two crops' terms are
summed, as in DINOv2. Nearest neighbours are searched over the GLOBAL batch (DINOv2: per GPU).
"""
import jax.numpy as jnp

from medjax.objectives import _common

NEEDS = ("global_pooled",)
_EPS = 1e-8  # DINOv2's: inside the distance and the log


def loss(outputs, batch, cfg):
  del cfg
  x = _common.l2_normalize(outputs["global_pooled"].astype(jnp.float32))  # [B, 2, D]
  valid = batch["has_image"].astype(bool)
  n = x.shape[0]
  candidates = valid[None, :] & ~jnp.eye(n, dtype=bool)
  anchors = valid & jnp.any(candidates, axis=1)  # needs another row to be near to
  total, distances = jnp.zeros(()), []
  for crop in range(x.shape[1]):
    z = x[:, crop]
    dots = jnp.einsum("id,jd->ij", z, z, preferred_element_type=jnp.float32)
    nearest = jnp.argmax(jnp.where(candidates, dots, _common.NEG), axis=1)
    distance = jnp.linalg.norm(z - z[nearest] + _EPS, axis=-1)
    total = total + _common.weighted_mean(-jnp.log(distance + _EPS), anchors)
    distances.append(_common.weighted_mean(distance, anchors))
  return total, {"nearest_distance": sum(distances) / len(distances)}
