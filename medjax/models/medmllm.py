"""Med-MLLM: ViT image tower, text encoder, text decoder, MAE decoder, optional fusion, heads
(projection heads; the DINO / iBOT heads when configured)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from medjax.configs import base
from medjax.models import forward, layers, precision
from medjax.models.dino_head import DinoHead
from medjax.models.forward import OUTPUTS  # noqa: F401  (public: what __call__ can return)
from medjax.models.fusion import Fusion
from medjax.models.mae import MaeDecoder
from medjax.models.text import TextDecoder, TextEncoder, TiedLogits
from medjax.models.vit import ViT


def param_count(state) -> int:
  """Number of scalars in a params pytree (arrays, abstract shapes, nnx.State or pure dict)."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(state))


def _scalar(value: float, rngs: nnx.Rngs) -> nnx.Param:
  init = layers.partitioned(nnx.initializers.constant(value))
  return nnx.Param(init(rngs.params(), (), jnp.float32))


class MedMLLM(nnx.Module):
  """The full model, built from the ``model`` sub-config (documented in medjax/configs/base.py):
  dtype, remat, scan_layers, logits_chunk, proj_dim, mask_ratio, image (width, depth, heads,
  mlp_dim, patch_size, channels, image_size and base.IMAGE_OPTIONS), text (vocab_size, width,
  depth, heads, mlp_dim, max_len and base.TEXT_OPTIONS), decoder (width, depth, heads, mlp_dim,
  max_len; shares the text vocabulary), mae_decoder (width, depth, heads, mlp_dim), fusion
  (depth, heads, mlp_dim; at the text width), dino_head and ibot_head (prototypes, hidden,
  bottleneck, depth). Depth or prototypes 0 = no such module.

  ``__call__(batch, needs)`` computes the requested OUTPUTS and only the work they need
  (medjax/models/forward.py); the methods below are the pieces it is made of.
  """

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    kw = dict(dtype=precision.compute_dtype(cfg.dtype), param_dtype=jnp.float32, rngs=rngs)
    tower = dict(kw, stack=layers.StackOptions(remat=cfg.remat, scan=cfg.scan_layers))
    im, tx, de, md, fu = cfg.image, cfg.text, cfg.decoder, cfg.mae_decoder, cfg.fusion
    # Options an unresolved config may lack (configs.resolve fills them from the same defaults).
    io, to = ({**defaults, **tower_cfg} for defaults, tower_cfg in (
        (base.IMAGE_OPTIONS, im), (base.TEXT_OPTIONS, tx)))
    self.mask_ratio = cfg.mask_ratio
    self.logits_chunk = cfg.logits_chunk  # positions per chunk of vocabulary losses (forward.py)
    self.image = ViT(
        im.width, im.depth, im.heads, im.mlp_dim, im.patch_size, im.channels,
        class_token=io["class_token"], positions=io["positions"],
        grid=im.image_size // im.patch_size,
        block=layers.BlockOptions(norm_eps=io["norm_eps"], mlp_act=io["mlp_act"],
                                  layer_scale=io["layer_scale"]), **tower)
    self.text = TextEncoder(
        tx.vocab_size, tx.width, tx.depth, tx.heads, tx.mlp_dim, tx.max_len,
        block=layers.BlockOptions(norm=to["norm"], norm_eps=to["norm_eps"],
                                  mlp_act=to["mlp_act"]), **tower)
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
    # Self-distillation (medjax/objectives/dino.py, ibot.py). The ViT has no class token: its
    # mean-pooled feature plays DINO's [CLS]. iBOT's student sees hidden patches as one learned
    # token (zeros at init, as in DINOv2).
    head = lambda h: DinoHead(im.width, **h, **kw) if h.prototypes > 0 else None
    self.dino_head = head(cfg.dino_head)
    self.ibot_head = head(cfg.ibot_head)
    zeros = layers.partitioned(nnx.initializers.zeros_init(), "embed")
    self.patch_mask_token = (nnx.Param(zeros(rngs.params(), (im.width,), jnp.float32))
                             if self.ibot_head is not None else None)

  @staticmethod
  def _head(width: int, proj_dim: int, **kw) -> nnx.LinearGeneral:
    return layers.dense(width, proj_dim, ("embed",), ("proj",), use_bias=False,
                        kernel_init=nnx.initializers.lecun_normal(), **kw)

  def encode_image(self, images: jax.Array,
                   hidden: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """images [B, H, W, C] -> (tokens [B, N, width] in the compute dtype, pooled float32).
    `hidden` [B, N] bool: patches replaced by the iBOT mask token."""
    if hidden is None:
      return self.image(images)
    if self.patch_mask_token is None:
      raise ValueError("This MedMLLM has no iBOT head (model.ibot_head.prototypes == 0), so no "
                       "mask token to hide patches with.")
    return self.image(images, hidden, self.patch_mask_token[...])

  def encode_text(self, ids: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """ids [B, T] int32, mask [B, T] bool -> (states [B, T, width], pooled float32)."""
    return self.text(ids, mask)

  def _decoder(self) -> TextDecoder:
    if self.decoder is None:
      raise ValueError("This MedMLLM has no text decoder (model.decoder.depth == 0).")
    return self.decoder

  def decode(self, ids: jax.Array, mask: jax.Array, image_tokens: jax.Array,
             at: jax.Array | None = None) -> TiedLogits | jax.Array:
    """Next-token logits [B, T, vocab] float32 (TiedLogits), conditioned on the image tokens
    (only position `at`'s, a [B, vocab] array, when given)."""
    decoder = self._decoder()
    return decoder(ids, mask, self.image_to_decoder(image_tokens), at=at)

  def decode_from_text(self, ids: jax.Array, mask: jax.Array, states: jax.Array,
                       states_mask: jax.Array) -> TiedLogits:
    """Next-token logits [B, T, vocab] float32, conditioned on encoded text (padding hidden)."""
    decoder = self._decoder()
    return decoder(ids, mask, self.text_to_decoder(states), states_mask)

  def embed_image(self, pooled: jax.Array) -> jax.Array:
    """Pooled image features -> unit-norm float32 [B, proj_dim] (image-text space)."""
    return layers.l2_normalize(self.image_head(pooled).astype(jnp.float32))

  def embed_text(self, pooled: jax.Array) -> jax.Array:
    """Pooled text features -> unit-norm float32 [B, proj_dim] (image-text space)."""
    return layers.l2_normalize(self.text_head(pooled).astype(jnp.float32))

  def embed_view(self, pooled: jax.Array) -> jax.Array:
    """Pooled image features -> unit-norm float32 [B, proj_dim] (image-image space)."""
    return layers.l2_normalize(self.view_head(pooled).astype(jnp.float32))

  def embed_section(self, pooled: jax.Array) -> jax.Array:
    """Pooled report-section features -> unit-norm float32 [B, proj_dim] (text-text space)."""
    return layers.l2_normalize(self.section_head(pooled).astype(jnp.float32))

  def dino_logits(self, pooled: jax.Array) -> jax.Array:
    """Pooled image features [..., width] -> DINO prototype logits [..., prototypes] float32."""
    if self.dino_head is None:
      raise ValueError("This MedMLLM has no DINO head (model.dino_head.prototypes == 0).")
    return self.dino_head(pooled)

  def ibot_logits(self, tokens: jax.Array) -> jax.Array:
    """Patch tokens [..., width] -> iBOT prototype logits [..., prototypes] float32."""
    if self.ibot_head is None:
      raise ValueError("This MedMLLM has no iBOT head (model.ibot_head.prototypes == 0).")
    return self.ibot_head(tokens)

  def reconstruct_patches(self, kept: jax.Array, restore: jax.Array,
                          grid: tuple[int, int]) -> jax.Array:
    """MAE pixel predictions [B, N, patch_dim] float32 from the encoded kept patches."""
    if self.mae_decoder is None:
      raise ValueError("This MedMLLM has no MAE decoder (model.mae_decoder.depth == 0).")
    return self.mae_decoder(kept, restore, grid)

  def __call__(self, batch: dict, needs: frozenset[str]) -> dict:
    """The ``needs`` outputs (names in OUTPUTS, see medjax.models.forward) for a batch with the
    docs/contracts.md keys; only the keys those outputs read must be present."""
    return forward.outputs(self, batch, frozenset(needs))
