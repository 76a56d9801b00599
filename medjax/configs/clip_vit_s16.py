"""A CLIP-style two-tower (Radford et al. 2021) at ViT-S/16 scale: the model medjax's speed is
compared on against the same model written in plain PyTorch (benchmarks/torch_peer.py).

ViT-S/16 at 224 px on 3-channel images, a 12-layer 384-wide text encoder over a 32,000-piece
vocabulary and a 77-token context, 512-d projections, the CLIP loss (learned temperature),
AdamW at batch 32; 55.8M parameters (the two unused heads of MedMLLM included).

  python -m benchmarks.peer_benchmark                     # medjax vs PyTorch, alternating
  python -m benchmarks.step_benchmark --config clip_vit_s16
  medjax-train --config clip_vit_s16 --workdir runs/clip  # on data with 3-channel images

`model.dtype="auto"` (the default) computes in bfloat16 where the backend has fast bf16 units and
in float32 elsewhere (medjax/models/precision.py); `--config.model.dtype=float32` forces f32.
"""
from medjax.configs import base, common
from medjax.models import vit


def get_config(arg=None):
  common.parse_arg(arg)  # no args
  c = base.get_config()
  c.batch_size = 32
  c.data.text_len = 77
  c.model.proj_dim = 512
  c.model.image = dict(vit.size("S/16"), channels=3, image_size=224)
  c.model.text = dict(vocab_size=32000, width=384, depth=12, heads=6, mlp_dim=1536, max_len=77)
  c.model.decoder.depth = 0  # no generative objective: no decoder
  c.model.mae_decoder.depth = 0
  c.objectives.image_text = dict(weight=1.0, kind="clip", tau=0.0, i2t_weight=0.5)
  return c
