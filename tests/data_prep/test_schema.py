"""Record schema v2 (data_prep/schema.py), the patient split and the leakage check (splits.py)."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from medjax import contract
from medjax.data_prep import builder, images, schema, splits

PNG = images.encode_png(Image.new("L", (40, 40)))


def _record(**overrides) -> dict:
  return schema.record(**{"source": "s", "patient_id": "p", "study_id": "a", **overrides})


def test_record_fills_defaults_and_extracts_entities():
  rec = _record(images=[PNG], views=["PA"], findings=" No pneumothorax. ",
                impression="Cardiomegaly.", notes="Rule out pneumonia.", labels={"edema": 1})
  assert set(rec) == set(contract.RECORD_FIELDS) and rec["findings"] == "No pneumothorax."
  assert rec["labels"].dtype == np.int8 and rec["labels"][contract.LABELS.index("edema")] == 1
  assert (rec["labels"] == -2).sum() == len(contract.LABELS) - 1
  ent = dict(zip(contract.ENTITIES, rec["entities"].tolist()))
  # from the report only: the indication in the notes is a question, not a finding
  assert (ent["pneumothorax"], ent["cardiomegaly"], ent["pneumonia"]) == (-1, 1, 0)
  assert [int(rec[k]) for k in contract.OUTCOMES] == [-1] * 4
  notes_only = _record(notes="Rule out pneumonia.")
  assert notes_only["entities"][contract.ENTITIES.index("pneumonia")] == 2


@pytest.mark.parametrize("change, field", [
    (dict(images=[b"GIF89a"], views=["PA"]), "images"),
    (dict(images=[PNG], views=[]), "views"),
    (dict(images=[PNG], views=["OBLIQUE"]), "views"),
    (dict(patient_id=" "), "patient_id"),
])
def test_validation_names_record_and_field(change, field):
  with pytest.raises(ValueError, match=f"record 's'/'a'.*field '{field}'"):
    _record(**change)


def test_unknown_label_is_an_error():
  with pytest.raises(ValueError, match="unknown labels"):
    _record(labels={"covid": 1})


@pytest.mark.parametrize("raw, view", [
    ("PA", "PA"), ("AP Supine", "AP"), ("AP AXIAL", "AP"), ("L", "LATERAL"), ("LL", "LATERAL"),
    ("XTABLE LATERAL", "LATERAL"), ("LAO", ""), ("SWIMMERS", ""), ("", "")])
def test_view_names(raw, view):
  assert schema.normalize_view(raw) == view


def test_split_is_the_same_in_every_process_and_follows_the_seed():
  """Unlike Python's salted hash(), the split of a patient must not change between processes
  (a converter run twice, or on another machine, must write the same splits)."""
  patients = [str(i) for i in range(400)]

  def val(seed):
    return sorted(p for p in patients if splits.split_of(p, seed, 0.15) == "validation")

  code = ("from medjax.data_prep import splits; print(sorted(str(i) for i in range(400) "
          "if splits.split_of(str(i), 0, 0.15) == 'validation'))")
  other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONHASHSEED="123")).stdout
  assert other.strip() == str(val(0))
  assert val(0) != val(1)
  assert 30 < len(val(0)) < 90  # about 15% of 400


def _study(sid, patient):
  return builder.Study(sid, patient, {})


def test_leakage_raises_with_ids():
  by_split = {"train": [_study("a", "p1")], "validation": [_study("b", "p1")]}
  with pytest.raises(ValueError, match=r"patients \['p1'\]"):
    splits.check_leakage(by_split, {"a": ("h1",), "b": ("h2",)})
  by_split = {"train": [_study("a", "p1")], "test": [_study("b", "p2")]}
  with pytest.raises(ValueError, match=r"studies \[\['a', 'b'\]\]"):
    splits.check_leakage(by_split, {"a": ("same",), "b": ("other", "same")})
  splits.check_leakage({"train": [_study("a", "p1"), _study("b", "p1")]}, {"a": ("x",),
                                                                           "b": ("x",)})


def test_patients_sharing_an_image_are_one_group_whatever_the_order():
  studies = [_study("a", "p3"), _study("b", "p1"), _study("c", "p2"), _study("d", "p4")]
  hashes = {"a": ("x",), "b": ("y",), "c": ("x", "y"), "d": ("z",)}
  groups = splits.merge_patients(studies, hashes)
  assert groups == {"p1": "p1", "p2": "p1", "p3": "p1", "p4": "p4"}
  assert splits.merge_patients(studies[::-1], hashes) == groups
