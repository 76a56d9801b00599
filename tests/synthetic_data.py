"""Synthetic schema-v2 records (as `tfds.data_source` returns them) and a pipeline config:
pipeline tests that need no prepared dataset."""
import io

import ml_collections
import numpy as np
from PIL import Image

from medjax import contract
from medjax.configs import base, resolve

# Invented sentences: no real patient text anywhere in the tests.
PHRASES = (
    "Heart size is normal.", "No pleural effusion.", "A 1.5 cm nodule in the right upper lobe.",
    "Mild cardiomegaly.", "Lungs are clear.", "Patchy opacities in both bases.",
    "No pneumothorax.", "Stable appearance since the prior study.",
    "Fever and cough for 3 days.", "Seen by Dr. Lee on the ward.", "Small left effusion.",
    "Interval improvement of the consolidation.",
)


def png(rng: np.random.Generator, value: int | None = None) -> bytes:
  """Random-size grayscale PNG: noise, or one flat `value`."""
  h, w = rng.integers(24, 64, 2)
  pixels = (np.full((h, w), value) if value is not None else rng.integers(0, 256, (h, w)))
  buf = io.BytesIO()
  Image.fromarray(pixels.astype(np.uint8), "L").save(buf, format="PNG")
  return buf.getvalue()


def record(source: str, patient: str, study: str, *, images=(), views=None, findings="",
           impression="", notes="", labels=None, found=None) -> dict:
  """A record as `tfds.data_source` returns it: bytes text, object arrays, int8 vectors.
  `labels` / `found`: names of positive labels / present entities; the rest 'not stated' / 0."""
  label_vec = np.full(len(contract.LABELS), -2, np.int8)
  for name in labels or ():
    label_vec[contract.LABELS.index(name)] = 1
  entity_vec = np.zeros(len(contract.ENTITIES), np.int8)
  for name, code in (found or {}).items():
    entity_vec[contract.ENTITIES.index(name)] = code
  views = ["PA"] * len(images) if views is None else views
  return {"images": np.array(list(images), dtype=object),
          "views": np.array([v.encode() for v in views], dtype=object),
          "findings": findings.encode(), "impression": impression.encode(),
          "notes": notes.encode(), "patient_id": patient.encode(), "study_id": study.encode(),
          "source": source.encode(), "labels": label_vec, "entities": entity_vec,
          "survival": np.int8(-1), "intubated": np.int8(-1), "went_icu": np.int8(-1),
          "needed_supplemental_O2": np.int8(-1)}


def _text(rng, lo, hi) -> str:
  return " ".join(rng.choice(PHRASES, rng.integers(lo, hi + 1), replace=False))


def cxr_records(source: str, n_patients: int, seed: int) -> list[dict]:
  """Patients with 1-4 studies: image + notes, image + report, image only; some two-view."""
  rng = np.random.default_rng(seed)
  out = []
  for p in range(n_patients):
    for s in range(rng.integers(1, 5)):
      kind = rng.integers(3)
      two_views = rng.random() < 0.3
      images = [png(rng)] * (2 if two_views else 1)
      views = ["PA", "LATERAL"] if two_views else ["AP"]
      text = {0: dict(notes=_text(rng, 1, 4)),
              1: dict(findings=_text(rng, 1, 3), impression=_text(rng, 1, 1)),
              2: {}}[kind]
      labels = [str(n) for n in rng.choice(contract.LABELS, rng.integers(0, 3), replace=False)]
      found = {str(n): int(rng.choice([1, -1, 2])) for n in
               rng.choice(contract.ENTITIES, rng.integers(0, 3), replace=False)} if text else {}
      out.append(record(source, f"p{p}", f"s{p}-{s}", images=images, views=views,
                        labels=labels, found=found, **text))
  return out


def report_records(source: str, n: int, seed: int) -> list[dict]:
  """Text-only reports, one patient each."""
  rng = np.random.default_rng(seed)
  return [record(source, f"r{i}", f"r{i}", findings=_text(rng, 1, 3),
                 impression=_text(rng, 1, 2), found={"pneumothorax": -1}) for i in range(n)]


def synth_cfg(**overrides) -> ml_collections.ConfigDict:
  """The base config's data section, resolved for small images (16 px, patch 4) and texts,
  with `overrides` on top (data fields; image_size / patch_size set the model's)."""
  c = base.get_config()
  c.model.image.update(image_size=overrides.pop("image_size", 16),
                       patch_size=overrides.pop("patch_size", 4))
  c.data.update(dict(text_len=40, sentence_len=16, normalize="dataset", withheld_labels=()))
  data = resolve.resolved(c).data
  data.update(overrides)
  return data
