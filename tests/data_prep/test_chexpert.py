"""chexpert_cxr on a small CheXpert-v1.0-small tree (train.csv / valid.csv + JPEGs)."""
import io

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from medjax import contract
from medjax.data_prep import chexpert

import layouts

LABEL = {n: i for i, n in enumerate(contract.LABELS)}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("chexpert")
  src = layouts.chexpert(root / "CheXpert-v1.0-small")
  manifest = chexpert.prepare(src, root / "out")
  records = {}
  for split in ("train", "validation"):
    source = tfds.data_source("chexpert_cxr", split=split, data_dir=str(root / "out"))
    records.update({r["study_id"].decode(): (split, r)
                    for r in source.__getitems__(range(len(source)))})
  return src, manifest, records


def test_counts_and_published_split(prepared):
  _, manifest, records = prepared
  assert manifest["rows_read"] == 5 and manifest["records"] == 4 and manifest["skipped"] == []
  assert {sid: split for sid, (split, _) in records.items()} == {
      "patient00001/study1": "train", "patient00002/study1": "train",
      "patient00002/study2": "train", "patient64541/study1": "validation"}


def test_views_pixels_and_labels(prepared):
  src, _, records = prepared
  two = records["patient00002/study1"][1]
  assert two["patient_id"] == b"patient00002" and two["source"] == b"chexpert_cxr"
  assert two["views"].tolist() == [b"PA", b"LATERAL"]
  original = Image.open(src / "train/patient00002/study2/view1_frontal.jpg")
  stored = Image.open(io.BytesIO(records["patient00002/study2"][1]["images"][0]))
  assert stored.mode == "L" and np.array_equal(np.asarray(stored), np.asarray(original))
  first = records["patient00001/study1"][1]["labels"]
  assert (first[LABEL["cardiomegaly"]], first[LABEL["edema"]], first[LABEL["no_finding"]],
          first[LABEL["covid19"]]) == (1, -1, -2, 0)
  second = records["patient00002/study2"][1]["labels"]
  assert second[LABEL["pneumonia"]] == second[LABEL["other_pneumonia"]] == 1
  assert second[LABEL["support_devices"]] == 0
  # image-only: no text, so no entities
  assert all(r["notes"] == b"" and not r["entities"].any() for _, r in records.values())


def test_view_names():
  assert chexpert.view_of("Frontal", "AP") == "AP" and chexpert.view_of("Lateral", "") == "LATERAL"
  assert chexpert.view_of("Frontal", "LL") == ""  # contradictory: unknown, not lateral
