"""Record schema v2 (medjax.contract): TFDS features, record building and validation.

Every converter builds its records with `record(...)`, which fills the defaults, extracts the
entity vector from the text and validates the result, so no converter can drift from the schema.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

from medjax import contract
from medjax.contract import ID_FIELDS, LABELS, NOT_STATED, OUTCOMES, TEXT_FIELDS, VIEWS
from medjax.data_prep import entities

_PNG = b"\x89PNG\r\n\x1a\n"


def features() -> tfds.features.FeaturesDict:
  """The TFDS features of `contract.RECORD_FIELDS`. Images are stored as PNG bytes:
  tfds.features.Image would need TensorFlow to encode."""
  def feature(shape, dtype):
    return tfds.features.Text() if dtype is str else tfds.features.Tensor(shape=shape,
                                                                            dtype=dtype)
  return tfds.features.FeaturesDict({k: feature(*spec)
                                     for k, spec in contract.RECORD_FIELDS.items()})


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
  """int8 over contract.LABELS; labels not in `values` are NOT_STATED."""
  unknown = set(values) - set(LABELS)
  if unknown:
    raise ValueError(f"unknown labels {sorted(unknown)}; known: {LABELS}")
  return np.array([values.get(k, NOT_STATED) for k in LABELS], np.int8)


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
  rec["entities"] = entities.extract(contract.study_text(rec), lexicon_dir)
  validate(rec)
  return rec


def validate(rec: dict) -> None:
  """Raises ValueError naming the record and field when `rec` breaks schema v2."""
  where = f"record {rec.get('source')!r}/{rec.get('study_id')!r}"

  def fail(field, msg):
    raise ValueError(f"{where}: field {field!r}: {msg}")

  if set(rec) != set(contract.RECORD_FIELDS):
    fail(sorted(set(rec) ^ set(contract.RECORD_FIELDS)), "missing or unexpected")
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
  for k, n, codes in (("labels", len(LABELS), contract.LABEL_CODES),
                      ("entities", len(contract.ENTITIES), contract.ENTITY_CODES)):
    a = np.asarray(rec[k])
    if a.dtype != np.int8 or a.shape != (n,) or not set(a.tolist()) <= codes:
      fail(k, f"must be int8[{n}] with codes {sorted(codes)}")
  for k in OUTCOMES:
    if int(rec[k]) not in contract.OUTCOME_CODES:
      fail(k, "must be 1, 0 or -1")


def stored_features(data_dir, name: str, split: str, chunk: int = 1024):
  """The feature maps of a prepared split's raw tf.train.Example records, in stored order,
  `chunk` at a time (memory of one chunk, at any dataset size). Parsing only the features one
  needs of the raw records is ~10x faster than decoding whole records through TFDS."""
  source = tfds.data_source(name, split=split, data_dir=str(data_dir), download=False)
  for start in range(0, len(source), chunk):
    positions = list(range(start, min(start + chunk, len(source))))
    for data in source.data_source.__getitems__(positions):
      yield tf_example_pb2.Example.FromString(data).features.feature


def text_feature(feature, key: str) -> str:
  """A Text field of `stored_features`' map, as str."""
  return feature[key].bytes_list.value[0].decode("utf-8")
