"""Med-MLLM, large (pod scale): ViT-L/16 image tower, 24-layer 1024-wide text encoder,
12-layer decoder with cross-attention; 0.87B parameters, bfloat16 compute, FSDP.

  medjax-train --config medmllm_l --workdir gs://BUCKET/medmllm_l \
      --multiprocess --config.data.dir=gs://BUCKET/medjax_data

Memory check without the hardware (prints bytes per device of params, optimizer state and XLA
temporaries; see the README's table):

  medjax-aot --config medmllm_l --fake_devices 64

Sizing: batch 1024 at 224 px fits a v5p-64 slice (64 chips, fsdp=64) with remat; params and
Adam moments are ~10.4 GB in total, 1/N of it per device.
"""
from medjax.configs import base, common
from medjax.models import vit


def get_config(arg=None):
  common.parse_arg(arg)  # no args
  c = base.get_config()
  c.stages = base.medmllm_stages(30_000, 30_000, 40_000,
                                 image_sources=base.medmllm_image_sources())
  c.total_steps = 100_000
  c.batch_size = 1024
  c.data.sources = base.medmllm_sources()
  c.mesh = dict(data=1, fsdp=-1, tensor=1)
  c.data.text_len = 128
  c.model.dtype = "bfloat16"
  c.model.remat = "full"
  c.model.scan_layers = True  # 24 + 24 + 12 blocks: compile one of each, not 60
  c.model.proj_dim = 512
  c.model.image.update(vit.size("L/16"), channels=1, image_size=224)
  c.model.text.update(vocab_size=32000, width=1024, depth=24, heads=16, mlp_dim=4096, max_len=128)
  c.model.decoder = dict(width=1024, depth=12, heads=16, mlp_dim=4096, max_len=128)
  c.optim.lr = 3e-4
  c.optim.warmup_steps = 2000
  c.log_every = 100
  c.checkpoint_every = 2000
  return c
