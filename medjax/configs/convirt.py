"""ConVIRT (Zhang et al. 2020, "Contrastive Learning of Medical Visual Representations from
Paired Images and Text"): bidirectional image-text InfoNCE on paired studies, tau 0.1 fixed,
image->text weighted 0.75 and text->image 0.25 (their lambda).

  medjax-train --config convirt --workdir runs/convirt
  medjax-train --config convirt:tiny --workdir /tmp/convirt_tiny  # CPU

Differs from the paper: a ViT-B/16 image tower instead of ResNet-50, a from-scratch text encoder
instead of ClinicalBERT, linear projection heads (theirs have a hidden layer), the study text
(findings + impression, else notes) instead of one sampled sentence, and AdamW with a cosine
schedule instead of Adam with plateau decay. Batch 32, lr 1e-4 as in the paper.
"""
from medjax.configs import base, common, medmllm_tiny


def get_config(arg=None):
  tiny = common.parse_arg(arg, tiny=False).tiny
  c = (medmllm_tiny if tiny else base).get_config()
  if not tiny:
    c.batch_size = 32
    c.optim.lr = 1e-4
  c.objectives.image_text = dict(weight=1.0, kind="clip", tau=0.1, i2t_weight=0.75)
  c.model.decoder.depth = 0  # no generative objective: no decoder to store and decay
  c.model.mae_decoder.depth = 0
  return c
