"""Captioning / report generation: the decoder writes the study's text given its image tokens."""
from medjax.objectives import _common

NEEDS = ("caption_logits",)


def loss(outputs, batch, cfg):
  """Teacher-forced next-token cross-entropy over the real tokens of image-text pairs only."""
  del cfg
  pairs = batch["has_image"] & batch["has_text"]
  value, accuracy, tokens = _common.next_token_cross_entropy(
      outputs["caption_logits"], batch["text_ids"], batch["text_mask"], pairs)
  return value, {"accuracy": accuracy, "tokens": tokens}
