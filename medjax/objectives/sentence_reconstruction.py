"""Sentence reconstruction: the decoder regenerates a hidden sentence of the report from the
encoded rest of the report (``sr_context_ids``, where the sentence is one [MASK])."""
from medjax.objectives import _common

NEEDS = ("sr_logits",)


def loss(outputs, batch, cfg):
  """Next-token cross-entropy on the hidden sentence's real tokens, rows with has_sentence."""
  del cfg
  value, accuracy, tokens = _common.next_token_cross_entropy(
      outputs["sr_logits"], batch["sr_target_ids"], batch["sr_target_mask"],
      batch["has_sentence"])
  return value, {"accuracy": accuracy, "tokens": tokens}
