"""mimic_cxr on a small tree in the MIMIC-CXR-JPG layout (tables plain and gzipped)."""
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from medjax import contract
from medjax.data_prep import mimic_cxr

import layouts

REPO = Path(__file__).resolve().parents[2]
LABEL = {n: i for i, n in enumerate(contract.LABELS)}


def _records(data_dir, splits=("train", "validation", "test")) -> dict[str, tuple[str, dict]]:
  out = {}
  for split in splits:
    source = tfds.data_source("mimic_cxr", split=split, data_dir=str(data_dir), download=False)
    out.update({r["study_id"].decode(): (split, r)
                for r in source.__getitems__(range(len(source)))})
  return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("mimic")
  manifest = mimic_cxr.prepare(layouts.mimic(root / "src", gz=True), root / "out")
  return manifest, _records(root / "out")


def test_counts_and_published_split(prepared):
  manifest, records = prepared
  assert manifest["rows_read"] == 5 and manifest["studies_read"] == 4 and manifest["records"] == 4
  assert {k: v["num_examples"] for k, v in manifest["splits"].items()} == {
      "train": 2, "validation": 1, "test": 1}
  assert {sid: split for sid, (split, _) in records.items()} == {
      "50414267": "train", "53189527": "train", "57375967": "validation", "50771383": "test"}
  # the only skip: the test study has no report file, its images make an image-only record
  (skip,) = manifest["skipped"]
  assert skip == {"file": "files/p10/p10000898/s50771383.txt", "id": "50771383",
                  "part": "report", "reason": "report dropped: missing report file"}


def test_multi_view_study_with_report(prepared):
  _, records = prepared
  r = records["50414267"][1]
  assert r["patient_id"] == b"10000032" and r["source"] == b"mimic_cxr"
  assert r["views"].tolist() == [b"PA", b"LATERAL"] and len(r["images"]) == 2
  shapes = [Image.open(io.BytesIO(png)).size for png in r["images"]]
  assert shapes == [(64, 80), (64, 80)]
  assert r["findings"] == (b"Small left pleural effusion. No pneumothorax. The heart size is "
                           b"mildly enlarged.")
  assert r["impression"] == b"Small left pleural effusion."
  assert r["notes"] == b"___F with cough // eval for pneumonia"
  labels = r["labels"]
  assert (labels[LABEL["pleural_effusion"]], labels[LABEL["cardiomegaly"]],
          labels[LABEL["pneumothorax"]], labels[LABEL["edema"]]) == (1, -1, 0, -2)
  assert labels[LABEL["covid19"]] == 0  # 2011-2016 studies
  ent = dict(zip(contract.ENTITIES, r["entities"].tolist()))
  assert ent["pleural_effusion"] == 1 and ent["pneumothorax"] == -1 and ent["pneumonia"] == 0


def test_dicom_view_and_image_only_study(prepared):
  _, records = prepared
  dicom = records["57375967"][1]
  img = Image.open(io.BytesIO(dicom["images"][0]))
  assert img.mode == "L" and img.size == (128, 128) and np.asarray(img).std() > 10
  assert dicom["findings"] == b"" and dicom["impression"] == b"No acute process."
  assert dicom["labels"][LABEL["pneumonia"]] == dicom["labels"][LABEL["other_pneumonia"]] == 1
  test = records["50771383"][1]
  assert test["views"].tolist() == [b"AP"] and test["findings"] == test["impression"] == b""
  assert set(test["labels"].tolist()) == {0, -2} and not test["entities"].any()


def test_report_sections():
  s = mimic_cxr.sections(layouts.MIMIC_REPORT)
  assert list(s) == ["EXAMINATION", "INDICATION", "COMPARISON", "FINDINGS", "IMPRESSION"]
  assert s["COMPARISON"] == "None."


def test_cli_with_plain_tables(tmp_path):
  src = layouts.mimic(tmp_path / "src")
  done = subprocess.run([sys.executable, "-m", "medjax.cli.prepare", "mimic_cxr", "--src",
                         str(src), "--out", str(tmp_path / "out"), "--max_side", "32"],
                        check=True, capture_output=True, text=True)
  assert done.stdout.splitlines()[-1] == '{"train": 2, "validation": 1, "test": 1}'
  assert "report dropped: missing report file" in done.stdout
  r = _records(tmp_path / "out", ("train",))["50414267"][1]
  assert Image.open(io.BytesIO(r["images"][0])).size == (26, 32)  # longest side cut to 32


def test_worker_processes_write_identical_shards(prepared, tmp_path):
  # plain tables here, gzipped ones in `prepared`: the same records either way
  manifest = mimic_cxr.prepare(layouts.mimic(tmp_path / "src"), tmp_path / "out", num_workers=2)
  assert manifest["splits"] == prepared[0]["splits"]
