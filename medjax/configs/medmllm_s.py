"""Med-MLLM, small: the CPU demo. The full recipe (image -> text -> image-text stages, all nine
objectives) on the real covid-chestxray sample, the IU reports and the NCBI abstracts.

  bash launch/demo.sh      # prepares the data, then runs exactly this:
  medjax-train --config medmllm_s --workdir runs/medmllm_s

An ablation (the README's probe table) is one stage of some objectives, weight 1, on some sources:
  medjax-train --workdir runs/only_clip \
      --config 'medmllm_s:only=image_text+entity_alignment,steps=300,sources=covid_cxr+iu_xray'

The image stage alone for 1,600 steps is what beat random towers on the linear probe (README,
round 4: AUROC 0.720 / 0.669 at seeds 0 / 1 against 0.600; 2.9 s/step with two runs side by side):
  medjax-train --workdir runs/img1600_s0 \
      --config 'medmllm_s:only=image_level+patient_level+mae,steps=1600,sources=covid_cxr'

Expected on a 2-core CPU: see the README's configs table (measured there).
"""
from medjax.configs import base, common


def get_config(arg=None):
  arg = common.parse_arg(arg, only="", steps=0, sources="")
  c = base.get_config()
  # The image stage is the longest: its contrastive losses learn slowest (small batches here).
  # It reads covid_cxr alone, the one source with images: 32 X-rays per batch instead of ~16.
  c.stages = base.medmllm_stages(300, 100, 300, image_sources=base.medmllm_image_sources())
  c.total_steps = 700
  c.batch_size = 32
  c.data.sources = base.medmllm_sources()
  c.data.text_len = 128
  c.model.proj_dim = 128
  c.model.image.update(width=192, depth=6, heads=3, mlp_dim=768, patch_size=16, channels=1,
                       image_size=128)
  c.model.text.update(vocab_size=4096, width=192, depth=4, heads=3, mlp_dim=768, max_len=128)
  c.model.decoder = dict(width=192, depth=2, heads=3, mlp_dim=768, max_len=128)
  c.optim.lr = 5e-4
  c.optim.warmup_steps = 30
  c.log_every = 10
  c.checkpoint_every = 100
  if arg.only:  # one stage of these objectives, weight 1 each (an ablation)
    if arg.steps < 1:
      raise ValueError("medmllm_s arg only=...: give steps=N too")
    c.total_steps = arg.steps
    c.stages = (dict(name="only", steps=c.total_steps,
                     weights={name: 1.0 for name in arg.only.split("+")}),)
  elif arg.steps:
    raise ValueError("medmllm_s arg steps=N goes with only=...")
  if arg.sources:
    c.data.sources = tuple(dict(name=n, weight=1.0) for n in arg.sources.split("+"))
  return c
