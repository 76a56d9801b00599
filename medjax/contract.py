"""The interfaces between medjax's parts, in one place: record schema, vocabularies, the text a
study contributes, special token ids, and the batch the pipeline hands the train step.

data_prep writes records of this schema, the pipeline reads them and yields `batch_specs`, the
objectives and AOT read those specs; docs/contracts.md is checked against this module by
tests/test_contract.py. It imports nothing from medjax: everything else may import it.
"""
from __future__ import annotations

import numpy as np

# ---- Record schema (one record = one study) ---------------------------------------------------
SCHEMA_VERSION = 2
DATASET_VERSION = "2.0.0"  # the TFDS version of every converted dataset: schema v2
RELEASE_NOTES = {DATASET_VERSION: "Record schema v2 (docs/contracts.md)."}

# The 14 CheXpert observations (its column order), then the two COVID-era diagnoses.
CHEXPERT = (
    "no_finding", "enlarged_cardiomediastinum", "cardiomegaly", "lung_lesion", "lung_opacity",
    "edema", "consolidation", "pneumonia", "atelectasis", "pneumothorax", "pleural_effusion",
    "pleural_other", "fracture", "support_devices",
)
LABELS = CHEXPERT + ("covid19", "other_pneumonia")
ENTITIES = CHEXPERT + (
    "covid19", "ground_glass_opacity", "viral_pneumonia", "bacterial_pneumonia", "interstitial",
    "ards",
)
# Prognosis outcomes a record may carry.
OUTCOMES = ("survival", "intubated", "went_icu", "needed_supplemental_O2")

# Codes. labels: 1 positive, 0 negative, -1 uncertain, -2 not stated; entities (from the text):
# 1 present, 0 not mentioned, -1 negated, 2 uncertain; outcomes: 1 yes, 0 no, -1 missing.
NOT_STATED = -2
LABEL_CODES = frozenset({1, 0, -1, NOT_STATED})
PRESENT, NOT_MENTIONED, NEGATED, UNCERTAIN = 1, 0, -1, 2
ENTITY_CODES = frozenset({PRESENT, NOT_MENTIONED, NEGATED, UNCERTAIN})
OUTCOME_CODES = frozenset({1, 0, -1})

TEXT_FIELDS = ("findings", "impression", "notes")
ID_FIELDS = ("patient_id", "study_id", "source")
VIEWS = ("PA", "AP", "LATERAL", "")  # view position per image; "" = unknown
FRONTAL_VIEWS = ("PA", "AP")
# field -> (shape, numpy dtype); object = bytes. images / views: one entry per view.
RECORD_FIELDS = {
    "images": ((None,), np.object_),  # 8-bit grayscale PNG bytes
    "views": ((None,), np.object_),
    **{k: ((), str) for k in TEXT_FIELDS + ID_FIELDS},
    "labels": ((len(LABELS),), np.int8),
    "entities": ((len(ENTITIES),), np.int8),
    **{k: ((), np.int8) for k in OUTCOMES},
}

# Binary tasks an evaluation scores (medjax/evals/labelled.py says which records and labels
# each reads) and the config names prompts for (prompts).
TASKS = ("diagnosis",) + OUTCOMES + CHEXPERT


def text_of(record, key: str) -> str:
  """A text field of a record, as str (TFDS returns bytes), stripped."""
  value = record[key]
  return (value.decode("utf-8") if isinstance(value, bytes) else str(value)).strip()


def study_text(record) -> str:
  """The text a study contributes (its `text_ids`; what its entities describe): findings +
  impression with a blank line between (always a sentence break), else the notes. An indication
  in the notes is a question, not a finding, so a report wins when there is one."""
  report = [t for t in (text_of(record, "findings"), text_of(record, "impression")) if t]
  return "\n\n".join(report) if report else text_of(record, "notes")


# ---- Sampling index (one file per split, beside its shards) ------------------------------------
# What the sampler needs of every record, so that a run starts without reading the records:
# data_prep writes it (its sha256 in manifest.json), medjax.data.mixture reads it.
INDEX_VERSION = 1


def index_file(name: str, split: str) -> str:
  return f"{name}-{split}.index.json"


def sampling_index(rows) -> dict:
  """rows: (patient_id, study_id, has_image, has_text) of every record, in stored order -> the
  JSON-able index: distinct `patients` in first-seen order, per record `patient_of` (its index
  into `patients`), `has_image` and `has_text` (0/1), and the study ids of `unusable` records
  (neither image nor text)."""
  patients, patient_of, has_image, has_text, unusable = {}, [], [], [], []
  for patient, study, image, text in rows:
    patient_of.append(patients.setdefault(patient, len(patients)))
    has_image.append(int(image))
    has_text.append(int(text))
    if not (image or text):
      unusable.append(study)
  return {"version": INDEX_VERSION, "records": len(patient_of), "patients": list(patients),
          "patient_of": patient_of, "has_image": has_image, "has_text": has_text,
          "unusable": unusable}


def read_index(index: dict, where: str) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
  """`sampling_index`'s dict -> (patient id per record, has_image bool[N], has_text bool[N],
  unusable study ids); ValueError naming `where` when it is not a complete index."""
  try:
    if index["version"] != INDEX_VERSION:
      raise ValueError(f"version {index['version']}, expected {INDEX_VERSION}")
    n, ids = int(index["records"]), [str(p) for p in index["patients"]]
    of = np.asarray(index["patient_of"], np.int64)
    flags = [np.asarray(index[k], np.int64) for k in ("has_image", "has_text")]
    if of.shape != (n,) or (n and not 0 <= of.min() <= of.max() < len(ids)):
      raise ValueError(f"patient_of does not give each of the {n} records a listed patient")
    if any(f.shape != (n,) or not np.isin(f, (0, 1)).all() for f in flags):
      raise ValueError(f"the flags do not hold one 0/1 entry per record of {n}")
    patients = [ids[k] for k in of.tolist()]
    unusable = [str(s) for s in index["unusable"]]
  except (KeyError, TypeError, IndexError, ValueError) as e:
    raise ValueError(f"{where}: not a valid sampling index ({type(e).__name__}: {e}); re-run "
                     "the data_prep converter") from None
  return patients, flags[0] > 0, flags[1] > 0, unusable


# ---- Tokens -----------------------------------------------------------------------------------
MASK = "[MASK]"  # a user-defined piece of every medjax tokenizer
SPECIAL_IDS = {"pad_id": 0, "unk_id": 1, "bos_id": 2, "eos_id": 3}

# ---- Batch (pipeline -> train step) -------------------------------------------------------------
TEXT_ID_KEYS = ("text_ids", "mlm_ids", "mlm_targets", "sr_context_ids", "findings_ids",
                "impression_ids")
TEXT_MASK_KEYS = ("text_mask", "sr_context_mask", "findings_mask", "impression_mask")
FLAG_KEYS = ("has_image", "has_text", "has_sentence", "has_findings_impression")
EMPTY_PATIENT = -1  # `patient` of an empty row: matches nobody's hash


NO_PATCH = -1  # an unused slot of `ibot_patches`


def ibot_slots(data_cfg) -> int:
  """Slots per global crop of `ibot_patches`: the most patches iBOT may hide in one crop."""
  patches = (int(data_cfg.image_size) // int(data_cfg.patch_size)) ** 2
  return max(1, int(float(data_cfg.ibot_mask_ratio[1]) * patches))


def batch_specs(data_cfg) -> dict:
  """key -> (shape of one row, numpy dtype) of every batch key, for a resolved data config
  (`image_size`, `channels`, `patch_size`, `text_len`, `sentence_len`; the optional keys
  `local_crops` and `ibot_patches` exist only when `local_crops` > 0 and
  `ibot_mask_probability` > 0)."""
  s, c, t = int(data_cfg.image_size), int(data_cfg.channels), int(data_cfg.text_len)
  patches = (s // int(data_cfg.patch_size)) ** 2
  optional = {}
  if int(data_cfg.local_crops) > 0:
    local = int(data_cfg.local_crop_size)
    optional["local_crops"] = ((int(data_cfg.local_crops), local, local, c), np.float32)
  if float(data_cfg.ibot_mask_probability) > 0:
    optional["ibot_patches"] = ((2, ibot_slots(data_cfg)), np.int32)
  return {
      "image": ((s, s, c), np.float32), "image2": ((s, s, c), np.float32),
      "patient": ((), np.int32),
      **{k: ((), np.bool_) for k in FLAG_KEYS},
      **{k: ((t,), np.int32) for k in TEXT_ID_KEYS},
      **{k: ((t,), np.bool_) for k in TEXT_MASK_KEYS},
      "mlm_weights": ((t,), np.float32),
      "sr_target_ids": ((int(data_cfg.sentence_len),), np.int32),
      "sr_target_mask": ((int(data_cfg.sentence_len),), np.bool_),
      "image_entities": ((len(ENTITIES),), np.float32),
      "text_entities": ((len(ENTITIES),), np.float32),
      "mae_noise": ((patches,), np.float32),
      **optional,
  }


def empty_row(data_cfg) -> dict:
  """A row with nothing in it: zeros everywhere, `patient` EMPTY_PATIENT, no hidden patch."""
  row = {k: np.zeros(shape, dtype) for k, (shape, dtype) in batch_specs(data_cfg).items()}
  row["patient"] = np.int32(EMPTY_PATIENT)
  if "ibot_patches" in row:
    row["ibot_patches"][:] = NO_PATCH
  return row
