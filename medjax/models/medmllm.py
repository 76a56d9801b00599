"""Med-MLLM: ViT image tower, text encoder, text decoder, MAE decoder, optional fusion, heads."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from medjax.models import layers, mae
from medjax.models.fusion import Fusion
from medjax.models.mae import MaeDecoder
from medjax.models.text import TextDecoder, TextEncoder
from medjax.models.vit import ViT


def param_count(state) -> int:
  """Number of scalars in a params pytree (arrays, abstract shapes, nnx.State or pure dict)."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(state))


def _scalar(value: float, rngs: nnx.Rngs) -> nnx.Param:
  init = layers.partitioned(nnx.initializers.constant(value))
  return nnx.Param(init(rngs.params(), (), jnp.float32))


def _l2_normalize(x: jax.Array) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-12)


# What ``MedMLLM.__call__`` can return; an objective lists the names it reads in its NEEDS.
OUTPUTS = frozenset({
    "image_emb", "text_emb", "logit_scale", "logit_bias",  # image-text space (+ its temperature)
    "view_emb", "view2_emb",  # image-image space, of batch['image'] and batch['image2']
    "findings_emb", "impression_emb",  # text-text space
    "mlm_logits", "sr_logits", "caption_logits",  # float32 [B, T, vocab]
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


def _jointly(fn, inputs: list[tuple]) -> list:
  """``fn`` applied once to several same-shaped inputs (tuples of [B, ...] arrays), results
  per input. Stacking on a new axis 1 and folding it into the batch axis keeps each example's
  rows on the device that holds the example (no resharding), and the tower is traced,
  compiled and run once instead of once per input."""
  if len(inputs) == 1:
    return [fn(*inputs[0])]
  k = len(inputs)
  folded = jax.tree.map(lambda *xs: jnp.stack(xs, 1).reshape(-1, *xs[0].shape[1:]), *inputs)
  out = fn(*folded)
  return [jax.tree.map(lambda y: y.reshape(-1, k, *y.shape[1:])[:, i], out) for i in range(k)]


class MedMLLM(nnx.Module):
  """The full model, built from the ``model`` sub-config (documented in configs/base.py):
  dtype, remat, proj_dim, mask_ratio, image (width, depth, heads, mlp_dim, patch_size,
  channels), text (vocab_size, width, depth, heads, mlp_dim, max_len), decoder (width, depth,
  heads, mlp_dim, max_len; shares the text vocabulary), mae_decoder (width, depth, heads,
  mlp_dim) and fusion (depth, heads, mlp_dim; at the text width). Depth 0 = no such module.

  ``__call__(batch, needs)`` computes the requested OUTPUTS and only the work they need.
  """

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    kw = dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.float32, rngs=rngs)
    tower = dict(kw, remat=cfg.remat)
    im, tx, de, md, fu = cfg.image, cfg.text, cfg.decoder, cfg.mae_decoder, cfg.fusion
    self.mask_ratio = cfg.mask_ratio
    self.image = ViT(im.width, im.depth, im.heads, im.mlp_dim, im.patch_size, im.channels,
                     **tower)
    self.text = TextEncoder(tx.vocab_size, tx.width, tx.depth, tx.heads, tx.mlp_dim, tx.max_len,
                            **tower)
    decoder = de.depth > 0
    self.decoder = (TextDecoder(tx.vocab_size, de.width, de.depth, de.heads, de.mlp_dim,
                                de.max_len, **tower) if decoder else None)
    # The decoder's cross-attention keys/values are shared by both contexts; a projection per
    # source gives each its own effective keys/values (and converts widths).
    context = lambda width: (layers.dense(width, de.width, ("embed",), ("embed",), **kw)
                             if decoder else None)
    self.image_to_decoder = context(im.width)
    self.text_to_decoder = context(tx.width)
    self.fusion = (Fusion(im.width, tx.width, fu.depth, fu.heads, fu.mlp_dim, **tower)
                   if fu.depth > 0 else None)
    patch_dim = im.patch_size ** 2 * im.channels
    self.mae_decoder = (MaeDecoder(tx.width if self.fusion else im.width, md.width, md.depth,
                                   md.heads, md.mlp_dim, patch_dim, **tower)
                        if md.depth > 0 else None)
    self.image_head = self._head(im.width, cfg.proj_dim, **kw)
    self.text_head = self._head(tx.width, cfg.proj_dim, **kw)
    # Separate spaces for image-image (SimCLR) and findings-impression contrast: invariances
    # to augmentation or section wording need not be forced onto the image-text space.
    self.view_head = self._head(im.width, cfg.proj_dim, **kw)
    self.section_head = self._head(tx.width, cfg.proj_dim, **kw)
    # SigLIP initialisation: logits = scale * cos + bias with scale 10 and bias -10 start the
    # sigmoid loss near the all-negative prior instead of paying a large initial loss.
    self.logit_scale = _scalar(math.log(10.0), rngs)
    self.logit_bias = _scalar(-10.0, rngs)

  @staticmethod
  def _head(width: int, proj_dim: int, **kw) -> nnx.Einsum:
    return nnx.Einsum(
        "...d,dp->...p", (width, proj_dim),
        kernel_init=layers.partitioned(nnx.initializers.lecun_normal(), "embed", "proj"), **kw)

  def encode_image(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """images [B, H, W, C] -> (tokens [B, N, width] in the compute dtype, pooled float32)."""
    return self.image(images)

  def encode_text(self, ids: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """ids [B, T] int32, mask [B, T] bool -> (states [B, T, width], pooled float32)."""
    return self.text(ids, mask)

  def _decoder(self) -> TextDecoder:
    if self.decoder is None:
      raise ValueError("This MedMLLM has no text decoder (model.decoder.depth == 0).")
    return self.decoder

  def decode(self, ids: jax.Array, mask: jax.Array, image_tokens: jax.Array) -> jax.Array:
    """Next-token logits [B, T, vocab] float32, conditioned on the image tokens."""
    decoder = self._decoder()
    return decoder(ids, mask, self.image_to_decoder(image_tokens))

  def decode_from_text(self, ids: jax.Array, mask: jax.Array, states: jax.Array,
                       states_mask: jax.Array) -> jax.Array:
    """Next-token logits [B, T, vocab] float32, conditioned on encoded text (padding hidden)."""
    decoder = self._decoder()
    return decoder(ids, mask, self.text_to_decoder(states), states_mask)

  def embed_image(self, pooled: jax.Array) -> jax.Array:
    """Pooled image features -> unit-norm float32 [B, proj_dim] (image-text space)."""
    return _l2_normalize(self.image_head(pooled).astype(jnp.float32))

  def embed_text(self, pooled: jax.Array) -> jax.Array:
    """Pooled text features -> unit-norm float32 [B, proj_dim] (image-text space)."""
    return _l2_normalize(self.text_head(pooled).astype(jnp.float32))

  def __call__(self, batch: dict, needs: frozenset[str]) -> dict:
    """The ``needs`` outputs (names in OUTPUTS) for a batch with the docs/contracts.md keys;
    only the keys those outputs read must be present. ``logit_scale`` is in log space (losses
    use exp(logit_scale)), ``logit_bias`` as is."""
    unknown = set(needs) - OUTPUTS
    if unknown:
      raise ValueError(f"Unknown model outputs {sorted(unknown)}; known: {sorted(OUTPUTS)}")
    out = {}
    if "logit_scale" in needs:
      out["logit_scale"] = self.logit_scale[...]
    if "logit_bias" in needs:
      out["logit_bias"] = self.logit_bias[...]
    masked_path = bool(needs & MAE_OUTPUTS) or (self.fusion is not None and "mlm_logits" in needs)
    image = self._image_outputs(batch, needs, out)
    text = self._text_outputs(batch, needs, masked_path, out)
    if masked_path:
      self._masked_outputs(batch, needs, text.get("mlm"), out)
    if "caption_logits" in needs:
      out["caption_logits"] = self.decode(batch["text_ids"], batch["text_mask"], image[0])
    return out

  def _image_outputs(self, batch, needs, out):
    """Embeddings of the full images; returns the tokens of batch['image'] (or None)."""
    views = [k for k, names in (("image", {"image_emb", "view_emb", "caption_logits"}),
                                ("image2", {"view2_emb"})) if needs & names]
    if not views:
      return None
    encoded = dict(zip(views, _jointly(self.encode_image, [(batch[k],) for k in views])))
    if "image_emb" in needs:
      out["image_emb"] = self.embed_image(encoded["image"][1])
    for name, key in (("view_emb", "image"), ("view2_emb", "image2")):
      if name in needs:
        out[name] = _l2_normalize(self.view_head(encoded[key][1]).astype(jnp.float32))
    return encoded.get("image")

  def _text_outputs(self, batch, needs, masked_path, out) -> dict:
    """One text-encoder pass over every text input needed; returns name -> (states, pooled)."""
    wanted = {"text": "text_emb" in needs, "sr_context": "sr_logits" in needs,
              "findings": "findings_emb" in needs, "impression": "impression_emb" in needs,
              # With fusion, the MAE path fuses the masked text too.
              "mlm": "mlm_logits" in needs or (masked_path and self.fusion is not None)}
    names = [n for n in TEXT_INPUTS if wanted[n]]
    if not names:
      return {}
    inputs = [tuple(batch[k] for k in TEXT_INPUTS[n]) for n in names]
    text = dict(zip(names, _jointly(self.encode_text, inputs)))
    if "text_emb" in needs:
      out["text_emb"] = self.embed_text(text["text"][1])
    for name in ("findings", "impression"):
      if f"{name}_emb" in needs:
        out[f"{name}_emb"] = _l2_normalize(self.section_head(text[name][1]).astype(jnp.float32))
    if "sr_logits" in needs:
      out["sr_logits"] = self.decode_from_text(batch["sr_target_ids"], batch["sr_target_mask"],
                                               text["sr_context"][0], batch["sr_context_mask"])
    if "mlm_logits" in needs and self.fusion is None:
      out["mlm_logits"] = self.text.logits(text["mlm"][0])
    return text

  def _masked_outputs(self, batch, needs, mlm, out):
    """MAE (and, with fusion, M3AE): encode the kept patches, fuse with the masked text if the
    model has a fusion module, reconstruct the pixels of every patch."""
    patches, grid = self.image.patchify(batch["image"])
    keep, restore, hidden = mae.choose_patches(
        batch["mae_noise"], mae.kept_count(patches.shape[1], self.mask_ratio))
    kept = self.image.encode_kept(batch["image"], keep)
    if self.fusion is not None:
      kept, fused_text = self.fusion(kept, mlm[0], batch["text_mask"])
      if "mlm_logits" in needs:
        out["mlm_logits"] = self.text.logits(fused_text)
    if "mae_pred" in needs:
      if self.mae_decoder is None:
        raise ValueError("This MedMLLM has no MAE decoder (model.mae_decoder.depth == 0).")
      out["mae_pred"] = self.mae_decoder(kept, restore, grid)
    if "mae_target" in needs:
      out["mae_target"] = mae.normalized_patches(patches)
    if "mae_mask" in needs:
      out["mae_mask"] = hidden
