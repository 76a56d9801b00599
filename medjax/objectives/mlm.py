"""Masked language modelling (BERT): predict the chosen tokens from their context.

The pipeline chose the positions (15% of real tokens, 80/10/10 mask/random/keep) and marks them
with ``mlm_weights``; text-less rows simply have no weight. With a fusion module (M3AE) the
logits come from the fused image-text states.
"""
from medjax.objectives import _common

NEEDS = ("mlm_logits",)


def loss(outputs, batch, cfg):
  """Cross-entropy at the weighted positions, normalised by the sum of the weights."""
  del cfg
  value, accuracy, tokens = _common.token_cross_entropy(
      outputs["mlm_logits"], batch["mlm_targets"], batch["mlm_weights"])
  return value, {"accuracy": accuracy, "tokens": tokens}
