"""M3AE (Chen et al. 2022, "Multi-Modal Masked Autoencoders for Medical Vision-and-Language
Pre-Training"): mask 75% of the image patches and 15% of the text tokens, encode what is left
of each, fuse the two in a small cross-modal transformer, and reconstruct the missing pixels (MAE
loss) and tokens (MLM loss) from the fused states.

  medjax-train --config m3ae --workdir runs/m3ae
  medjax-train --config m3ae:tiny --workdir /tmp/m3ae_tiny  # CPU

Differs from the paper: the fusion is 2 blocks of attention over the concatenated image and
text tokens (the paper's fusion module is deeper, with cross-attention between the two
streams); both predictions read the last fusion layer, whereas M3AE reconstructs pixels from a
lower layer than tokens; the token head is the tied linear MLM head rather than an MLP; towers
start from scratch, not from CLIP-ViT and RoBERTa weights; chest X-rays instead of ROCO/MedICaT.
"""
from medjax.configs import base, common, medmllm_tiny


def get_config(arg=None):
  tiny = common.parse_arg(arg, tiny=False).tiny
  c = (medmllm_tiny if tiny else base).get_config()
  c.model.mask_ratio = 0.75  # images; the pipeline masks 15% of text tokens for MLM
  c.model.fusion = dict(depth=2, heads=c.model.text.heads, mlp_dim=c.model.text.mlp_dim)
  c.model.decoder.depth = 0  # M3AE has no text decoder
  c.objectives.image_text.weight = 0.0
  c.objectives.mlm.weight = 1.0
  c.objectives.mae.weight = 1.0
  return c
