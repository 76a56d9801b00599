"""MedMLLM's forward pass for many objectives at once.

Each output is computed only if an active objective reads it, and shared work happens once: one
image-tower pass serves image_emb, view_emb and caption_logits (and encodes image2 alongside,
and both for the self-distillation outputs unless iBOT hides patches of them), one
text-encoder pass encodes every text input needed. `teacher_outputs` is what an EMA teacher
computes.
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
    # Self-distillation on the global crops (image, image2) and batch['local_crops']. With
    # ibot_patch needed, the global crops are encoded with batch['ibot_patches'] hidden (iBOT's
    # student view) and dino_global / global_pooled come from that pass, as in iBOT and DINOv2.
    "dino_global", "dino_local",  # DINO logits float32 [B, 2, P], [B, L, P] (L = 0: no crops)
    "ibot_patch",  # iBOT logits float32 [B, 2, M, P'] at the M slots of batch['ibot_patches']
    "global_pooled",  # pooled features of the global crops, float32 [B, 2, width]
})
MAE_OUTPUTS = frozenset({"mae_pred", "mae_target", "mae_mask"})
GLOBAL_CROP_OUTPUTS = frozenset({"dino_global", "ibot_patch", "global_pooled"})
SELF_DISTILLATION_OUTPUTS = GLOBAL_CROP_OUTPUTS | {"dino_local"}
# What an EMA teacher computes (`teacher_outputs`; objectives name them 'teacher/<name>' in their
# NEEDS), with the top-level modules whose params the teacher keeps its own copy of. A momentum
# encoder (MoCo) would add e.g. "view_emb": ("image", "view_head").
TEACHER = "teacher/"
TEACHER_OUTPUTS = {"dino_global": ("image", "dino_head"), "ibot_patch": ("image", "ibot_head")}

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
  hide_crop_patches = "ibot_patch" in needs
  shared_crops = bool(needs & GLOBAL_CROP_OUTPUTS) and not hide_crop_patches
  encoded = _images(model, batch, needs, out, both_views=shared_crops)
  text = _texts(model, batch, needs, fused and masked, out)
  if masked:
    _masked(model, batch, needs, text.get("mlm"), out)
  if "caption_logits" in needs:
    out["caption_logits"] = model.decode(batch["text_ids"], batch["text_mask"],
                                         encoded["image"][0])
  if needs & SELF_DISTILLATION_OUTPUTS:
    _self_distillation(model, batch, needs, encoded, hide_crop_patches, out)
  for name in ("mlm_logits", "sr_logits", "caption_logits"):
    if name in out:  # the losses compute them model.logits_chunk positions at a time
      out[name] = out[name].replace(chunk=model.logits_chunk)
  return out


def teacher_outputs(model, batch: dict, needs: frozenset[str]) -> dict:
  """What an EMA teacher computes: the TEACHER_OUTPUTS names in ``needs``, from the full global
  crops (nothing hidden), with gradients stopped. ``model`` carries the teacher's params."""
  unknown = needs - TEACHER_OUTPUTS.keys()
  if unknown:
    raise ValueError(f"Unknown teacher outputs {sorted(unknown)}; known: "
                     f"{sorted(TEACHER_OUTPUTS)}")
  out = {}
  encoded = _images(model, batch, frozenset(), out, both_views=True)
  _self_distillation(model, batch, needs, encoded, False, out)
  return jax.lax.stop_gradient(out)


def _images(model, batch, needs, out, both_views: bool = False) -> dict:
  """Embeddings of the full images; returns view key -> (tokens, pooled) of the views encoded
  (`both_views`: image and image2 whatever else needs them)."""
  views = [k for k, names in (("image", {"image_emb", "view_emb", "caption_logits"}),
                              ("image2", {"view2_emb"})) if both_views or needs & names]
  if not views:
    return {}
  encoded = dict(zip(views, jointly(model.encode_image, [(batch[k],) for k in views])))
  if "image_emb" in needs:
    out["image_emb"] = model.embed_image(encoded["image"][1])
  for name, key in (("view_emb", "image"), ("view2_emb", "image2")):
    if name in needs:
      out[name] = model.embed_view(encoded[key][1])
  return encoded


def _self_distillation(model, batch, needs, encoded, hide_patches: bool, out):
  """DINO / iBOT / KoLeo outputs. `hide_patches`: encode the global crops with iBOT's hidden
  patches (the student's view); otherwise `encoded` already holds both, in full."""
  if needs & GLOBAL_CROP_OUTPUTS:
    if hide_patches:
      _, h, w, _ = batch["image"].shape
      num_patches = (h // model.image.patch_size) * (w // model.image.patch_size)
      hidden = [_hidden(batch["ibot_patches"][:, i], num_patches) for i in (0, 1)]
      encoded = dict(zip(("image", "image2"), jointly(
          model.encode_image, [(batch["image"], hidden[0]), (batch["image2"], hidden[1])])))
    pooled = jnp.stack([encoded["image"][1], encoded["image2"][1]], axis=1)  # [B, 2, width]
    if "global_pooled" in needs:
      out["global_pooled"] = pooled
    if "dino_global" in needs:
      out["dino_global"] = model.dino_logits(pooled)
    if "ibot_patch" in needs:
      tokens = jnp.stack([encoded["image"][0], encoded["image2"][0]], axis=1)  # [B, 2, N, w]
      slots = jnp.maximum(batch["ibot_patches"], 0)[..., None]  # unused slots read patch 0
      out["ibot_patch"] = model.ibot_logits(jnp.take_along_axis(tokens, slots, axis=2))
  if "dino_local" in needs:
    crops = batch.get("local_crops")
    if crops is None:  # no local crops configured: DINO on the two global crops alone
      b, prototypes = batch["image"].shape[0], model.dino_head.prototypes.shape[1]
      out["dino_local"] = jnp.zeros((b, 0, prototypes), jnp.float32)
    else:
      b, k = crops.shape[:2]
      pooled = model.encode_image(crops.reshape(b * k, *crops.shape[2:]))[1]
      out["dino_local"] = model.dino_logits(pooled.reshape(b, k, -1))


def _hidden(slots: jax.Array, num_patches: int) -> jax.Array:
  """Slots [B, M] of raster indices (NO_PATCH = -1 unused) -> hidden [B, N] bool."""
  return jnp.any(slots[:, :, None] == jnp.arange(num_patches)[None, None, :], axis=1)


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
