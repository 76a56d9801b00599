"""Hugging Face <-> medjax: parameter names and config fields, one table per architecture.

Each `Arch` maps a medjax module (its path under the tower, e.g. `blocks.layers.{i}.attn.query`)
to the HF module of the state dict and a `kind` saying how the two lay out their tensors
(medjax keeps JAX's inputs-first kernels; `medjax.hf.convert` does the conversions):
  norm      LayerNorm: scale <-> weight, bias <-> bias
  linear    kernel [in, out] <-> weight [out, in] (torch.nn.Linear); bias as is
  qkv       kernel [embed, heads, head_dim] <-> weight [heads * head_dim, embed]; bias flattened
  out       kernel [heads, head_dim, embed] <-> weight [embed, heads * head_dim]; bias as is
  conv      stem kernel [p * p * C, width], a patch's pixels in (row, column, channel) order <->
            Conv2d weight [width, C, p, p]; a 3-channel stem is summed into medjax's 1 channel
            (equal when the three channels get the same values: a grayscale X-ray as RGB)
  same      one tensor, same layout (LayerScale, token table)
  class     the class token [width] <- cls_token [1, 1, width] + the class slot of the position
            table (HF adds it at every resolution, so folding it in is exact)
  grid      the patch position table [grid * grid, width] <- the HF table without its class
            slot, resized bicubically from the HF grid to the configured one (as HF does at run
            time for another input size)
  text_pos  positions [max_len, width] <- position_embeddings + token_type_embeddings[0]: medjax
            has no segment ids, BERT's single-segment input adds type 0 everywhere
`config` maps medjax tower fields to the HF config attributes that must equal them; `options`
are the medjax tower options the architecture has; `requires` HF config values medjax can hold
only at these settings. `ignored` HF tensors have no medjax counterpart and are not used.
"""
from __future__ import annotations

import dataclasses

# HF hidden_act -> medjax mlp_act. "gelu_new" is the same tanh approximation.
ACTS = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}
EXPORT_ACTS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}  # medjax mlp_act -> HF


@dataclasses.dataclass(frozen=True)
class Derived:
  """A config value HF does not store as one attribute: `text` says how `of(hf_config)` gets
  it."""
  text: str
  of: object


@dataclasses.dataclass(frozen=True)
class Arch:
  tower: str  # "image" or "text"
  blocks: str  # HF prefix of block {i}
  block: dict  # medjax module in block {i} -> (HF module under `blocks`, kind)
  top: dict  # medjax module outside the blocks -> (HF name, kind)
  config: dict  # medjax tower field -> HF config attribute (or Derived)
  options: dict  # medjax tower option -> the value this architecture has
  requires: dict = dataclasses.field(default_factory=dict)  # HF config attribute -> value
  ignored: tuple = ()  # HF tensors medjax does not use


_VISION_CONFIG = {"width": "hidden_size", "depth": "num_hidden_layers",
                  "heads": "num_attention_heads", "mlp_dim": "intermediate_size",
                  "patch_size": "patch_size", "norm_eps": "layer_norm_eps",
                  "mlp_act": "hidden_act"}
_TEXT_CONFIG = {"vocab_size": "vocab_size", "max_len": "max_position_embeddings",
                "width": "hidden_size", "depth": "num_hidden_layers",
                "heads": "num_attention_heads", "mlp_dim": "intermediate_size",
                "norm_eps": "layer_norm_eps", "mlp_act": "hidden_act"}
_ATTENTION = lambda prefix, out: {
    "attn.query": (f"{prefix}q_proj", "qkv"), "attn.key": (f"{prefix}k_proj", "qkv"),
    "attn.value": (f"{prefix}v_proj", "qkv"), "attn.out": (f"{prefix}{out}", "out")}
_MLP = {"mlp.up": ("mlp.fc1", "linear"), "mlp.down": ("mlp.fc2", "linear")}
_STEM = {"stem": ("embeddings.patch_embeddings.projection", "conv"),
         "cls": ("embeddings.cls_token", "class"),
         "positions": ("embeddings.position_embeddings", "grid"),
         "norm": ("layernorm", "norm")}
_CLASS_TOKEN_VIT = dict(class_token=True, positions="learned")

# SiglipVisionModel without its attention-pooling head: medjax's own image tower (no class
# token, mean-pooled; the sin-cos code goes into the position table). The export target.
SIGLIP = Arch(
    tower="image", blocks="encoder.layers.{i}",
    block={"norm_attn": ("layer_norm1", "norm"), **_ATTENTION("self_attn.", "out_proj"),
           "norm_mlp": ("layer_norm2", "norm"), **_MLP},
    top={"stem": ("embeddings.patch_embedding", "conv"),
         "positions": ("embeddings.position_embedding.weight", "grid"),
         "norm": ("post_layernorm", "norm")},
    config={**_VISION_CONFIG, "channels": "num_channels"},
    options=dict(class_token=False, positions="learned", layer_scale=0.0),
    requires={"vision_use_head": False})

VIT = Arch(
    tower="image", blocks="layers.{i}",
    block={"norm_attn": ("layernorm_before", "norm"), **_ATTENTION("attention.", "o_proj"),
           "norm_mlp": ("layernorm_after", "norm"), **_MLP},
    top=_STEM, config=_VISION_CONFIG, options=dict(_CLASS_TOKEN_VIT, layer_scale=0.0),
    requires={"qkv_bias": True},
    # The pooler is a dense + tanh on the class state; medjax pools the class state itself.
    ignored=("pooler.dense.weight", "pooler.dense.bias"))

# RAD-DINO's architecture.
DINOV2 = Arch(
    tower="image", blocks="encoder.layer.{i}",
    block={"norm_attn": ("norm1", "norm"), **_ATTENTION("attention.", "o_proj"),
           "scale_attn": ("layer_scale1.lambda1", "same"), "norm_mlp": ("norm2", "norm"),
           **_MLP, "scale_mlp": ("layer_scale2.lambda1", "same")},
    top=_STEM,
    config={**_VISION_CONFIG, "layer_scale": "layerscale_value",
            "mlp_dim": Derived("hidden_size * mlp_ratio",
                               lambda c: int(c.hidden_size * c.mlp_ratio))},
    options=_CLASS_TOKEN_VIT, requires={"qkv_bias": True, "use_swiglu_ffn": False},
    # Replaces hidden patches in DINOv2's masked-image pretraining only.
    ignored=("embeddings.mask_token",))

_BERT_ATTENTION = {"attn.query": ("attention.self.query", "qkv"),
                   "attn.key": ("attention.self.key", "qkv"),
                   "attn.value": ("attention.self.value", "qkv"),
                   "attn.out": ("attention.output.dense", "out"),
                   "mlp.up": ("intermediate.dense", "linear"),
                   "mlp.down": ("output.dense", "linear")}
_TEXT_EMBED = {"embed.tokens.embedding": ("embeddings.word_embeddings.weight", "same"),
               "embed.positions": ("embeddings.position_embeddings.weight", "text_pos")}
# Pooler: dense + tanh on the [CLS] state; medjax pools the [CLS] state itself.
_POOLER = ("pooler.dense.weight", "pooler.dense.bias")

# Post-LN BERT (PubMedBERT, CXR-BERT, MiniLM).
BERT = Arch(
    tower="text", blocks="encoder.layer.{i}",
    block={**_BERT_ATTENTION, "norm_attn": ("attention.output.LayerNorm", "norm"),
           "norm_mlp": ("output.LayerNorm", "norm")},
    top={**_TEXT_EMBED, "embed_norm": ("embeddings.LayerNorm", "norm")},
    config=_TEXT_CONFIG, options=dict(norm="post"),
    requires={"position_embedding_type": "absolute"}, ignored=_POOLER)

# Pre-LN BERT: medjax's own text encoder. The export target.
MEGATRON_BERT = Arch(
    tower="text", blocks="encoder.layer.{i}",
    block={"norm_attn": ("attention.ln", "norm"), **_BERT_ATTENTION, "norm_mlp": ("ln", "norm")},
    top={**_TEXT_EMBED, "norm": ("encoder.ln", "norm")},
    config=_TEXT_CONFIG, options=dict(norm="pre"),
    requires={"position_embedding_type": "absolute"}, ignored=_POOLER)

# transformers class (what AutoModel builds for the directory) -> its table.
ARCHS = {"SiglipVisionModel": SIGLIP, "ViTModel": VIT, "Dinov2Model": DINOV2,
         "BertModel": BERT, "MegatronBertModel": MEGATRON_BERT}
