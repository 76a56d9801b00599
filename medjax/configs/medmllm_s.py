"""Med-MLLM, small: the CPU demo. The full recipe (image -> text -> image-text stages, all nine
objectives) on the real covid-chestxray sample, the IU reports and the NCBI abstracts.

  bash launch/demo.sh      # prepares the data, then runs exactly this:
  medjax-train --config medmllm_s --workdir runs/medmllm_s

An ablation (the README's probe table) is one stage of some objectives, weight 1 (KoLeo 0.1, as
in DINOv2), on some sources:
  medjax-train --workdir runs/only_clip \
      --config 'medmllm_s:only=image_text+entity_alignment,steps=300,sources=covid_cxr+iu_xray'

The image stage may use RAD-DINO's self-distillation (dino, ibot, koleo; medjax/configs/
rad_dino.py) beside or instead of Med-MLLM's image objectives, alone or in the full recipe:
  --config 'medmllm_s:only=dino+ibot,steps=1600,sources=covid_cxr'
  --config 'medmllm_s:image=image_level+patient_level+mae+dino+ibot'
The full recipe's image stage may be longer than its 300 steps (the text and image-text
stages keep their 100 and 300): --config 'medmllm_s:image_steps=1000'.
Sized for this CPU: heads of 512 hidden, 128 bottleneck and 4,096 prototypes; 6 local crops of
64 px (4 x 4 patches); the teacher temperature warms up over the stage's first 30%. The global
crops stay this config's two views (data.crop_scale), so recipes differ in objectives only.

The image stage alone for 1,600 steps is what beat random towers on the linear probe (README,
round 4: AUROC 0.720 / 0.669 at seeds 0 / 1 against 0.600; 2.9 s/step with two runs side by side):
  medjax-train --workdir runs/img1600_s0 \
      --config 'medmllm_s:only=image_level+patient_level+mae,steps=1600,sources=covid_cxr'

Expected on a 2-core CPU: see the README's configs table (measured there).
"""
from medjax.configs import base, common, rad_dino

WEIGHTS = {"koleo": 0.1}  # of an objective named in only= or image= (others: 1)
IMAGE_STEPS, TEXT_STEPS, JOINT_STEPS = 300, 100, 300


def get_config(arg=None):
  arg = common.parse_arg(arg, only="", steps=0, sources="", image_steps=IMAGE_STEPS,
                         image="+".join(base.MEDMLLM_IMAGE_OBJECTIVES))
  if arg.image_steps < 1:
    raise ValueError(f"medmllm_s arg image_steps={arg.image_steps}: give a positive count")
  c = base.get_config()
  # The image stage is the longest: its contrastive losses learn slowest (small batches here).
  # It reads covid_cxr alone, the one source with images: 32 X-rays per batch instead of ~16.
  image = tuple(arg.image.split("+"))
  c.stages = base.medmllm_stages(arg.image_steps, TEXT_STEPS, JOINT_STEPS,
                                 image_sources=base.medmllm_image_sources(),
                                 image_weights={n: WEIGHTS.get(n, 1.0) for n in image})
  c.total_steps = arg.image_steps + TEXT_STEPS + JOINT_STEPS
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
  # In-loop evaluators (medjax/evaluators): what the demo's curves show (medjax-plot).
  c.evals = dict(val=dict(type="val_loss", every=50, batches=4),
                 retrieval=dict(type="retrieval", every=50, dataset="covid_cxr"),
                 probe=dict(type="probe", every=100, dataset="covid_cxr", task="diagnosis"))
  if arg.only:  # one stage of these objectives, weight 1 each (an ablation)
    if arg.steps < 1:
      raise ValueError("medmllm_s arg only=...: give steps=N too")
    if image != base.MEDMLLM_IMAGE_OBJECTIVES or arg.image_steps != IMAGE_STEPS:
      raise ValueError("medmllm_s args image=... and image_steps=N set the full recipe's image "
                       "stage; only=... replaces the recipe: name its objectives and steps there")
    c.total_steps = arg.steps
    names = tuple(arg.only.split("+"))
    c.stages = (dict(name="only", steps=c.total_steps,
                     weights={n: WEIGHTS.get(n, 1.0) for n in names}),)
    stage_steps = arg.steps
  elif arg.steps:
    raise ValueError("medmllm_s arg steps=N goes with only=...")
  else:
    names, stage_steps = image, arg.image_steps
  rad_dino.enable(c, names, prototypes=4096, hidden=512, bottleneck=128, local_crops=6,
                  local_crop_size=64, warmup_steps=round(0.3 * stage_steps))
  if arg.sources:
    c.data.sources = tuple(dict(name=n, weight=1.0) for n in arg.sources.split("+"))
  return c
