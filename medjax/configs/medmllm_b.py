"""Med-MLLM, base: ViT-B/16 image tower, 12-layer 768-wide text encoder, 6-layer decoder;
~0.27B parameters. One GPU node or a small TPU slice.

  medjax-train --config medmllm_b --workdir runs/b --config.mesh.fsdp=-1
"""
from medjax.configs import base, common
from medjax.models import vit


def get_config(arg=None):
  common.parse_arg(arg)  # no args
  c = base.get_config()
  c.total_steps = 50_000
  c.batch_size = 512
  c.mesh = dict(data=1, fsdp=-1, tensor=1)  # FSDP over every device: 0.27B params + Adam
  c.model.dtype = "bfloat16"
  c.model.image.update(vit.size("B/16"), channels=1, image_size=224)
  c.model.text.update(vocab_size=32000, width=768, depth=12, heads=12, mlp_dim=3072, max_len=128)
  c.model.decoder = dict(width=768, depth=6, heads=12, mlp_dim=3072, max_len=128)
  c.optim.warmup_steps = 1000
  c.log_every = 50
  c.checkpoint_every = 1000
  return c
