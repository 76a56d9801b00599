"""The model card (README.md) of a Hugging Face export: data and licences, intended use,
limitations, and the lines that give medjax's embeddings from the exported directories."""
from __future__ import annotations

from medjax.data import mixture
from medjax.train import stages

# Datasets medjax converts (TFDS names) -> what a user of weights trained on them must know.
DATA_LICENCES = {
    "covid_cxr": "COVID-19 image data collection (ieee8023/covid-chestxray-dataset): images "
                 "CC BY or CC BY-NC-SA 4.0 per image, metadata and notes CC BY-NC-SA 4.0; "
                 "research, non-commercial use",
    "iu_xray": "Indiana University chest X-ray reports (Open-i, NLM): CC BY-NC-ND 4.0",
    "ncbi_disease": "NCBI disease corpus (PubMed abstracts, NLM): public-domain notice",
    "mimic_cxr": "MIMIC-CXR-JPG (PhysioNet): PhysioNet Credentialed Health Data License 1.5.0; "
                 "its data use agreement governs sharing models trained on it",
    "chexpert_cxr": "CheXpert (Stanford AIMI): Stanford University Dataset Research Use "
                    "Agreement, non-commercial research",
}

EXAMPLE_ROOT = "path/to/export"  # where the usage lines say the export is
_USAGE = '''```python
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

image_tower = AutoModel.from_pretrained("{root}/image_encoder").eval()
text_tower = AutoModel.from_pretrained("{root}/text_encoder").eval()
processor = AutoImageProcessor.from_pretrained("{root}/image_encoder")
tokenizer = AutoTokenizer.from_pretrained("{root}/text_encoder")
heads = load_file("{root}/projections.safetensors")

images = [Image.open(path).convert("L") for path in ["cxr.png"]]  # grayscale X-rays
notes = ["No acute cardiopulmonary process."]

with torch.no_grad():
  x = processor(images=images, return_tensors="pt")["pixel_values"]  # [b, C, H, W]
{normalize}  pooled_image = image_tower(pixel_values=x).{pool_image}
  text = tokenizer(notes, max_length={text_len}, truncation=True, padding="max_length",
                   return_tensors="pt")
  pooled_text = text_tower(input_ids=text["input_ids"],
                           attention_mask=text["attention_mask"]).last_hidden_state[:, 0]
  image_emb = F.normalize(pooled_image @ heads["image_projection.weight"].T, dim=-1)
  text_emb = F.normalize(pooled_text @ heads["text_projection.weight"].T, dim=-1)
  logits = heads["logit_scale"].exp() * image_emb @ text_emb.T + heads["logit_bias"]
```'''

_PER_IMAGE = '''  # medjax normalises each image to zero mean, unit std (data.normalize=per_image):
  mean = x.mean(dim=(1, 2, 3), keepdim=True)
  std = x.std(dim=(1, 2, 3), keepdim=True, correction=0).clamp(min=1e-3)
  x = (x - mean) / std
'''


def _sources(config) -> list[str]:
  names = {s["name"] for s in mixture.specs(config.data, "train")}
  for stage in stages.plan(config):
    names |= {s["name"] for s in stage.sources}
  return sorted(names)


def _objectives(config) -> list[str]:
  active = set()
  for stage in stages.plan(config):
    active |= {name for name, spec in stage.objectives.items() if spec["weight"] > 0}
  return sorted(active)


def _evaluation(evaluations: dict | None) -> str:
  """The card's evaluation section from `summary.evaluations` of the run (None or {}: none)."""
  if not evaluations:
    return ("No training metrics came with these weights (a step directory or an import was "
            "exported), so the card claims no figure.")
  rows = "\n".join(f"| `{key}` | {first:.4f} (step {start}) | {last:.4f} (step {step}) |"
                    for key, (start, first, step, last) in evaluations.items())
  return f"""What the trainer's evaluators logged (its metrics.jsonl) the first and the last time
each ran (step 0 is before any training; a stage's validation losses start with it), on
validation patients the run never trained on:

| evaluator | first | last |
|---|---|---|
{rows}

`probe/auroc`: a logistic regression on the frozen pooled image features of a labelled train
split, AUROC on its validation split; `retrieval/*`: image <-> text recall@k among validation
pairs; `val/<objective>/loss`: that objective on validation batches. The validation sets are
small (tens of patients): these figures say the run trained as configured, not how well it
diagnoses. medjax's `medjax-payoff` and `medjax-evaluate` compare a tower with random ones,
with patient-bootstrap intervals."""


def model_card(config, classes: dict, pool_image: str, evaluations: dict | None = None) -> str:
  """README.md text for an export of `config` (resolved) with towers of `classes`; the pooled
  image feature is `image_tower(...).<pool_image>`; `evaluations`: the run's in-loop figures
  (`summary.evaluations`), if the weights came from a run."""
  m, d = config.model, config.data
  licences = "\n".join(f"- `{name}`: {DATA_LICENCES.get(name, 'see the dataset own terms')}"
                       for name in _sources(config))
  per_image = d.normalize == "per_image"
  usage = _USAGE.format(root=EXAMPLE_ROOT, channels=m.image.channels, size=m.image.image_size,
                        text_len=d.text_len, normalize=_PER_IMAGE if per_image else "",
                        pool_image=pool_image)
  normalisation = ("each image to zero mean and unit standard deviation (`per_image`, medjax's "
                   "default: not an image-processor option, the usage lines apply it)"
                   if per_image else f"(x - {d.mean}) / {d.std} (`dataset`, in "
                                     "preprocessor_config.json)")
  image_pooling = ("the **final state of the class token** (`pooler_output`)" if m.image.class_token
                   else "the **mean of the patch tokens** of `last_hidden_state`")
  return f"""---
license: other
license_name: research-only-see-data-licences
library_name: transformers
pipeline_tag: feature-extraction
tags: [medical, chest-x-ray, vision-language, medjax, research-only]
---

# medjax Med-MLLM export: {classes['image']} image tower + {classes['text']} text tower

A chest X-ray image encoder and a clinical text encoder trained with medjax (JAX), converted
to Hugging Face transformers. **Research use only: not a medical device, not validated for any
clinical use, not to be used for diagnosis or patient care.**

## Files
- `image_encoder/`: {classes['image']} ({m.image.depth} blocks, width {m.image.width},
  patch {m.image.patch_size}, {m.image.channels} channel(s), {m.image.image_size} px) and
  `preprocessor_config.json` (resize to {m.image.image_size} px bilinear, /255).
- `text_encoder/`: {classes['text']} ({m.text.depth} blocks, width {m.text.width}, up to
  {m.text.max_len} tokens) and its tokenizer ([BOS] pieces [EOS], padded; medjax's ids).
- `projections.safetensors`: the heads into the shared spaces (`image_projection` and
  `text_projection`: image-text; `view_projection`: image-image; `section_projection`:
  findings-impression), each a [{m.proj_dim}, width] weight without bias, and the image-text
  `logit_scale` (log space) and `logit_bias` of the training loss
  (`{config.objectives.image_text.kind}`).

## Embeddings as medjax computes them
Pooling is medjax's: the image feature is {image_pooling}; the text feature is the **state at
position 0** (BOS) of `last_hidden_state` (`pooler_output` of the text tower is tanh of it, not
medjax's).
Pixels: grayscale, resized, /255, then {normalisation}.

{usage}

## Training
- Data (train splits): {', '.join(_sources(config))}; objectives: {', '.join(_objectives(config))};
  {config.total_steps} steps of batch {config.batch_size}, seed {config.seed}.
- Licences of the data the weights were trained on; the most restrictive one applies to the
  weights:
{licences}

## Evaluation during training
{_evaluation(evaluations)}

## Intended use and limitations
- Intended for research on medical vision-language representation learning: feature
  extraction, linear probes, fine-tuning with few labels, retrieval experiments.
- Not for clinical use. The training data are small public collections with their own biases
  (sources, scanners, populations, label noise); COVID-era image collections are known to let
  models learn source shortcuts. Performance on other hospitals, populations or devices is
  unknown; no evaluation here replaces a clinical validation.
- English text only; grayscale frontal chest X-rays at the size above.
- Never feed identifiable patient data to a shared model without the approvals it requires.
"""
