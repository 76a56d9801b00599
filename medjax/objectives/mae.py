"""Masked image reconstruction (MAE, He et al. 2022): MSE on per-patch normalised pixels."""
import jax.numpy as jnp

from medjax.objectives import _common

NEEDS = ("mae_pred", "mae_target", "mae_mask")


def loss(outputs, batch, cfg):
  """Mean squared error per patch, averaged over the HIDDEN patches of rows with an image:
  kept patches were seen by the encoder, so reconstructing them teaches nothing."""
  del cfg
  error = jnp.mean((outputs["mae_pred"] - outputs["mae_target"]) ** 2, axis=-1)
  weights = outputs["mae_mask"] * batch["has_image"].astype(jnp.float32)[:, None]
  return _common.weighted_mean(error, weights), {"patches": jnp.sum(weights)}
