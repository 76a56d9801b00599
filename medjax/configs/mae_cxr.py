"""Image-only masked autoencoding on chest X-rays (MAE, He et al. 2022): hide 75% of the
patches, encode the rest with the ViT, reconstruct the per-patch normalised pixels of the hidden
ones. The encoder is then fine-tuned for diagnosis.

  medjax-train --config mae_cxr --workdir runs/mae_cxr
  medjax-train --config mae_cxr:tiny --workdir /tmp/mae_tiny  # CPU

Fine-tuning for diagnosis with few labels (frozen or whole tower):
  medjax-finetune --config mae_cxr --workdir runs/mae_cxr --mode full
A following pretraining stage can start from these weights with --config.init_from=runs/mae_cxr.

Differs from the paper: 100k steps at batch 256 instead of 800-1600 ImageNet epochs at batch
4096 (lr scaled by batch / 256 as in the paper); grayscale chest X-rays; the text tower is built
but untouched (MedMLLM always has one). Kept as in the paper: 75% masking, norm-pix targets,
an 8-block 512-wide decoder for ViT-B, AdamW with betas (0.9, 0.95) and weight decay 0.05.
"""
from medjax.configs import base, common, medmllm_tiny


def get_config(arg=None):
  tiny = common.parse_arg(arg, tiny=False).tiny
  c = (medmllm_tiny if tiny else base).get_config()
  if not tiny:
    c.total_steps = 100_000
    c.optim.lr = 1.5e-4 * c.batch_size / 256
    c.model.mae_decoder = dict(width=512, depth=8, heads=16, mlp_dim=2048)
  c.optim.b2 = 0.95
  c.optim.weight_decay = 0.05
  c.model.mask_ratio = 0.75
  c.model.decoder.depth = 0
  c.objectives.image_text.weight = 0.0
  c.objectives.mae.weight = 1.0
  return c
