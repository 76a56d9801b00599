"""Record schema v2 (docs/contracts.md): TFDS features, record building and validation.

Every converter builds its records with `record(...)`, which fills the defaults, extracts the
entity vector from the text and validates the result, so no converter can drift from the schema.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from medjax.data import entities

SCHEMA_VERSION = 2
TEXT_FIELDS = ("findings", "impression", "notes")
ID_FIELDS = ("patient_id", "study_id", "source")
OUTCOMES = entities.OUTCOMES
VIEWS = ("PA", "AP", "LATERAL", "")
NOT_STATED = -2  # label code; the others: 1 positive, 0 negative, -1 uncertain
FIELDS = ("images", "views", *TEXT_FIELDS, *ID_FIELDS, "labels", "entities", *OUTCOMES)
_PNG = b"\x89PNG\r\n\x1a\n"


def features() -> tfds.features.FeaturesDict:
  # Images as PNG bytes: tfds.features.Image would need TensorFlow to encode.
  strings = tfds.features.Tensor(shape=(None,), dtype=np.object_)
  return tfds.features.FeaturesDict({
      "images": strings, "views": strings,
      **{k: tfds.features.Text() for k in TEXT_FIELDS + ID_FIELDS},
      "labels": tfds.features.Tensor(shape=(len(entities.LABELS),), dtype=np.int8),
      "entities": tfds.features.Tensor(shape=(len(entities.ENTITIES),), dtype=np.int8),
      **{k: tfds.features.Tensor(shape=(), dtype=np.int8) for k in OUTCOMES},
  })


def normalize_view(raw: str) -> str:
  """Source view names -> VIEWS: "AP Supine", "AP AXIAL" -> AP; "L", "LL", "XTABLE LATERAL" ->
  LATERAL; oblique, swimmer's and unknown views -> ""."""
  words = raw.strip().upper().replace("-", " ").replace("_", " ").split()
  if not words:
    return ""
  if words[0] in ("PA", "AP"):
    return words[0]
  if "LATERAL" in words or words[0] in ("L", "LL", "RL", "LAT"):
    return "LATERAL"
  return ""


def outcome_code(value: str) -> int:
  return {"Y": 1, "N": 0}.get(value.strip().upper(), -1)


def labels_vector(values: dict[str, int]) -> np.ndarray:
  """int8 over entities.LABELS; labels not in `values` are NOT_STATED."""
  unknown = set(values) - set(entities.LABELS)
  if unknown:
    raise ValueError(f"unknown labels {sorted(unknown)}; known: {entities.LABELS}")
  return np.array([values.get(k, NOT_STATED) for k in entities.LABELS], np.int8)


def entity_text(findings: str, impression: str, notes: str) -> str:
  """The text the entities describe: the report when there is one, else the notes (the same
  choice as the pipeline's text). An indication in the notes is a question, not a finding."""
  report = "\n\n".join(t for t in (findings, impression) if t)
  return report or notes


def record(*, source: str, patient_id: str, study_id: str, images=(), views=(), findings="",
           impression="", notes="", labels: dict[str, int] | None = None,
           outcomes: dict[str, int] | None = None, lexicon_dir: str | None = None) -> dict:
  rec = {
      "images": list(images), "views": list(views),
      "findings": findings.strip(), "impression": impression.strip(), "notes": notes.strip(),
      "patient_id": patient_id, "study_id": study_id, "source": source,
      "labels": labels_vector(labels or {}),
      **{k: np.int8((outcomes or {}).get(k, -1)) for k in OUTCOMES},
  }
  rec["entities"] = entities.extract(
      entity_text(rec["findings"], rec["impression"], rec["notes"]), lexicon_dir)
  validate(rec)
  return rec


def validate(rec: dict) -> None:
  """Raises ValueError naming the record and field when `rec` breaks schema v2."""
  where = f"record {rec.get('source')!r}/{rec.get('study_id')!r}"

  def fail(field, msg):
    raise ValueError(f"{where}: field {field!r}: {msg}")

  if set(rec) != set(FIELDS):
    fail(sorted(set(rec) ^ set(FIELDS)), "missing or unexpected")
  for k in ID_FIELDS:
    if not isinstance(rec[k], str) or not rec[k].strip():
      fail(k, "must be a non-empty string")
  for k in TEXT_FIELDS:
    if not isinstance(rec[k], str):
      fail(k, "must be a string")
  if len(rec["views"]) != len(rec["images"]):
    fail("views", f"{len(rec['views'])} views for {len(rec['images'])} images")
  for i, (img, view) in enumerate(zip(rec["images"], rec["views"])):
    if not isinstance(img, bytes) or not img.startswith(_PNG):
      fail("images", f"image {i} is not PNG bytes")
    if view not in VIEWS:
      fail("views", f"view {i} is {view!r}, not one of {VIEWS}")
  for k, n, codes in (("labels", len(entities.LABELS), {1, 0, -1, -2}),
                      ("entities", len(entities.ENTITIES), {1, 0, -1, 2})):
    a = np.asarray(rec[k])
    if a.dtype != np.int8 or a.shape != (n,) or not set(a.tolist()) <= codes:
      fail(k, f"must be int8[{n}] with codes {sorted(codes)}")
  for k in OUTCOMES:
    if int(rec[k]) not in (1, 0, -1):
      fail(k, "must be 1, 0 or -1")
