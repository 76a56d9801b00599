"""MedMLLM's forward pass for many objectives at once.

Each output is computed only if an active objective reads it, and shared work happens once: one
image-tower pass serves image_emb, view_emb and caption_logits (and encodes image2 alongside),
one text-encoder pass encodes every text input needed.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from medjax.models import mae

# What ``MedMLLM.__call__`` can return; an objective lists the names it reads in its NEEDS.
# logit_scale is in log space (losses use exp(logit_scale)), logit_bias as is.
OUTPUTS = frozenset({
    "image_emb", "text_emb", "logit_scale", "logit_bias",  # image-text space (+ its temperature)
    "view_emb", "view2_emb",  # image-image space, of batch['image'] and batch['image2']
    "findings_emb", "impression_emb",  # text-text space
    "mlm_logits", "sr_logits", "caption_logits",  # float32 [B, T, vocab], as text.TiedLogits
    "mae_pred", "mae_target", "mae_mask",  # [B, N, patch_dim] x2, [B, N] (1 = hidden patch)
})
MAE_OUTPUTS = frozenset({"mae_pred", "mae_target", "mae_mask"})

# Text-encoder inputs: name -> (ids key, mask key) in the batch (docs/contracts.md). MLM ids
# replace tokens but keep the padding of text_ids, so they share its mask.
TEXT_INPUTS = {
    "text": ("text_ids", "text_mask"),
    "mlm": ("mlm_ids", "text_mask"),
    "sr_context": ("sr_context_ids", "sr_context_mask"),
    "findings": ("findings_ids", "findings_mask"),
    "impression": ("impression_ids", "impression_mask"),
}


def jointly(fn, inputs: list[tuple]) -> list:
  """``fn`` applied once to several same-shaped inputs (tuples of [B, ...] arrays), results
  per input. Stacking on a new axis 1 and folding it into the batch axis keeps each example's
  rows on the device that holds the example (no resharding), and the tower is traced,
  compiled and run once instead of once per input."""
  if len(inputs) == 1:
    return [fn(*inputs[0])]
  k = len(inputs)
  folded = jax.tree.map(lambda *xs: jnp.stack(xs, 1).reshape(-1, *xs[0].shape[1:]), *inputs)
  out = fn(*folded)
  return [jax.tree.map(lambda y, i=i: y.reshape(-1, k, *y.shape[1:])[:, i], out)
          for i in range(k)]


def outputs(model, batch: dict, needs: frozenset[str]) -> dict:
  """``model``: a MedMLLM. -> {name: array} for exactly the names in ``needs``."""
  unknown = needs - OUTPUTS
  if unknown:
    raise ValueError(f"Unknown model outputs {sorted(unknown)}; known: {sorted(OUTPUTS)}")
  out = {}
  if "logit_scale" in needs:
    out["logit_scale"] = model.logit_scale[...]
  if "logit_bias" in needs:
    out["logit_bias"] = model.logit_bias[...]
  fused = model.fusion is not None
  masked = bool(needs & MAE_OUTPUTS) or (fused and "mlm_logits" in needs)
  image = _images(model, batch, needs, out)
  text = _texts(model, batch, needs, fused and masked, out)
  if masked:
    _masked(model, batch, needs, text.get("mlm"), out)
  if "caption_logits" in needs:
    out["caption_logits"] = model.decode(batch["text_ids"], batch["text_mask"], image[0])
  for name in ("mlm_logits", "sr_logits", "caption_logits"):
    if name in out:  # the losses compute them model.logits_chunk positions at a time
      out[name] = out[name].replace(chunk=model.logits_chunk)
  return out


def _images(model, batch, needs, out):
  """Embeddings of the full images; returns (tokens, pooled) of batch['image'] or None."""
  views = [k for k, names in (("image", {"image_emb", "view_emb", "caption_logits"}),
                              ("image2", {"view2_emb"})) if needs & names]
  if not views:
    return None
  encoded = dict(zip(views, jointly(model.encode_image, [(batch[k],) for k in views])))
  if "image_emb" in needs:
    out["image_emb"] = model.embed_image(encoded["image"][1])
  for name, key in (("view_emb", "image"), ("view2_emb", "image2")):
    if name in needs:
      out[name] = model.embed_view(encoded[key][1])
  return encoded.get("image")


def _texts(model, batch, needs, fuse_mlm, out) -> dict:
  """One text-encoder pass over every text input needed; returns name -> (states, pooled)."""
  wanted = {"text": "text_emb" in needs, "mlm": "mlm_logits" in needs or fuse_mlm,
            "sr_context": "sr_logits" in needs, "findings": "findings_emb" in needs,
            "impression": "impression_emb" in needs}
  names = [n for n in TEXT_INPUTS if wanted[n]]
  if not names:
    return {}
  inputs = [tuple(batch[k] for k in TEXT_INPUTS[n]) for n in names]
  text = dict(zip(names, jointly(model.encode_text, inputs)))
  if "text_emb" in needs:
    out["text_emb"] = model.embed_text(text["text"][1])
  for name in ("findings", "impression"):
    if f"{name}_emb" in needs:
      out[f"{name}_emb"] = model.embed_section(text[name][1])
  if "sr_logits" in needs:
    out["sr_logits"] = model.decode_from_text(batch["sr_target_ids"], batch["sr_target_mask"],
                                              text["sr_context"][0], batch["sr_context_mask"])
  if "mlm_logits" in needs and not fuse_mlm:
    out["mlm_logits"] = model.text.logits(text["mlm"][0])
  return text


def _masked(model, batch, needs, mlm, out):
  """MAE, or M3AE with a fusion module: encode the kept patches, fuse them with the masked text
  (MLM logits then come from the fused text states), reconstruct the pixels of every patch."""
  patches, grid = model.image.patchify(batch["image"])
  keep, restore, hidden = mae.choose_patches(
      batch["mae_noise"], mae.kept_count(patches.shape[1], model.mask_ratio))
  kept = model.image.encode_kept(batch["image"], keep)
  if model.fusion is not None:
    kept, fused_text = model.fusion(kept, mlm[0], batch["text_mask"])
    if "mlm_logits" in needs:
      out["mlm_logits"] = model.text.logits(fused_text)
  if "mae_pred" in needs:
    out["mae_pred"] = model.reconstruct_patches(kept, restore, grid)
  if "mae_target" in needs:
    out["mae_target"] = mae.normalized_patches(patches)
  if "mae_mask" in needs:
    out["mae_mask"] = hidden
