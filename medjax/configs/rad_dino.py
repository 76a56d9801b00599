"""RAD-DINO's recipe (Perez-Garcia et al., "Exploring scalable medical image encoders beyond text
supervision", Nature Machine Intelligence 2025): the image encoder trained on chest X-rays
alone with DINOv2's self-distillation (Oquab et al. 2024): an EMA teacher, 2 global + 8 local
crops, DINO on the pooled feature, iBOT on hidden patches, KoLeo.

  medjax-train --config rad_dino --workdir runs/rad_dino
  medjax-train --config rad_dino:tiny --workdir /tmp/rad_dino_tiny  # CPU, seconds
  medjax-finetune --config rad_dino --workdir runs/rad_dino --mode linear

Kept from DINOv2: DINO + iBOT (weight 1 each, untied heads of 3 layers, 2048 hidden, 256
bottleneck, 65,536 prototypes) + KoLeo (0.1); student temperature 0.1, teacher 0.04 -> 0.07
over the first 30% of the steps; teacher momentum 0.992 -> 1 (cosine); global crops of 32-100%
of the area, local crops of 5-32% at 96 px; half of the global crops with 10-50% of their
patches hidden; AdamW (0.9, 0.999), weight decay 0.04, clipping at 3.
Differs: medjax's ViT has no class token (its mean-pooled feature stands in for [CLS]), fixed
2-D sin-cos positions, no LayerScale or stochastic depth, patches of 16 px at 224 (RAD-DINO: a
ViT-B/14 started from DINOv2's weights, at 518 px); one grayscale channel; augmentations are
random resized crops with brightness/contrast jitter (no flips, blur or solarisation); the
teacher's outputs are centred by an EMA centre (DINO) rather than Sinkhorn-Knopp (DINOv2);
random rather than block-wise patch hiding; one learning rate and weight decay (no layer-wise
decay, no weight-decay schedule, no frozen last layer); the text tower is built but untouched
(MedMLLM always has one).
"""
import ml_collections

from medjax.configs import base, common, medmllm_tiny

SELF_DISTILLATION = ("dino", "ibot", "koleo")


def enable(c: ml_collections.ConfigDict, names, *, prototypes: int, hidden: int,
           bottleneck: int, local_crops: int, local_crop_size: int, warmup_steps: int) -> None:
  """Turns on what the self-distillation objectives among `names` need: the DINO head and local
  crops (dino), the iBOT head and hidden patches (ibot); the teacher temperature warms up over
  `warmup_steps`. Weights and the global crops (data.crop_scale) are the caller's. Shared by
  this recipe and medmllm_s's image stage."""
  head = dict(prototypes=prototypes, hidden=hidden, bottleneck=bottleneck, depth=3)
  if "dino" in names:
    c.model.dino_head = head
    c.data.local_crops, c.data.local_crop_size = local_crops, local_crop_size
    c.objectives.dino.warmup_steps = warmup_steps
  if "ibot" in names:
    c.model.ibot_head = dict(head)
    c.data.ibot_mask_probability = 0.5
    c.objectives.ibot.warmup_steps = warmup_steps


def get_config(arg=None):
  tiny = common.parse_arg(arg, tiny=False).tiny
  c = (medmllm_tiny if tiny else base).get_config()
  if tiny:  # 64 px, 4 x 4 patches: 2 local crops of 2 x 2 patches, small heads
    enable(c, SELF_DISTILLATION, prototypes=128, hidden=64, bottleneck=32, local_crops=2,
           local_crop_size=32, warmup_steps=10)
  else:
    c.total_steps = 100_000
    enable(c, SELF_DISTILLATION, prototypes=65536, hidden=2048, bottleneck=256, local_crops=8,
           local_crop_size=96, warmup_steps=30_000)
    c.optim.lr = 5e-4 * c.batch_size / 256  # DINO's linear scaling
    c.optim.warmup_steps = 10_000
  c.data.crop_scale = (0.32, 1.0)  # DINOv2's global crops
  c.objectives.image_text.weight = 0.0
  for name, weight in (("dino", 1.0), ("ibot", 1.0), ("koleo", 0.1)):
    c.objectives[name].weight = weight
  c.model.decoder.depth = 0
  c.model.mae_decoder.depth = 0
  c.optim.b2 = 0.999
  c.optim.weight_decay = 0.04
  c.optim.grad_clip = 3.0
  return c
