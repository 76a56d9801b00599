"""covid_cxr converter (schema v2) on the real sample and on a fixture in the upstream layout."""
import csv
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from medjax import contract
from medjax.data_prep import covid_cxr, entities

REPO = Path(__file__).resolve().parents[2]


VERSION_DIR = Path("covid_cxr") / "2.0.0"


def _manifest(data_dir) -> dict:
  return json.loads((Path(data_dir) / VERSION_DIR / "manifest.json").read_text())


def _shards(data_dir) -> dict[str, str]:
  return {k: v for s in _manifest(data_dir)["splits"].values() for k, v in s["shards"].items()}


def _records(data_dir, split) -> list[dict]:
  source = tfds.data_source("covid_cxr", split=split, data_dir=str(data_dir), download=False)
  return [source[i] for i in range(len(source))]


def test_every_csv_row_is_a_record_or_a_counted_skip(covid_data_dir, shared_data):
  with open(shared_data / "covid-chestxray" / "metadata.csv", newline="") as f:
    rows = len(list(csv.DictReader(f)))
  m = _manifest(covid_data_dir)
  counts = {s: len(_records(covid_data_dir, s)) for s in ("train", "validation")}
  assert counts == {s: m["splits"][s]["num_examples"] for s in counts}
  assert m["rows_read"] == rows
  assert sum(counts.values()) + len(m["skipped"]) + m["excluded_not_xray"] == rows
  assert m["split"] == {**m["split"], "seed": 0, "val_fraction": 0.15}


def test_splits_are_patient_and_image_disjoint(covid_data_dir):
  train, val = (_records(covid_data_dir, s) for s in ("train", "validation"))
  assert not {r["patient_id"] for r in train} & {r["patient_id"] for r in val}
  # same PNG bytes = same X-ray
  assert not {r["images"][0] for r in train} & {r["images"][0] for r in val}
  share = len({r["patient_id"] for r in val}) / len({r["patient_id"] for r in train + val})
  assert 0.08 < share < 0.25  # val_fraction 0.15 of the patients, up to sampling noise


def test_records_carry_the_csv_row(covid_data_dir, shared_data):
  with open(shared_data / "covid-chestxray" / "metadata.csv", newline="") as f:
    by_file = {row["file"]: row for row in csv.DictReader(f)}
  for record in _records(covid_data_dir, "validation")[:20]:
    row = by_file[record["study_id"].decode()]
    (png,) = record["images"]
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.mode == "L"
    original = Image.open(shared_data / "covid-chestxray" / "images" / row["file"])
    assert np.array_equal(np.asarray(img), np.asarray(original))  # lossless re-encode
    view = {"PA": "PA", "AP": "AP", "AP Supine": "AP", "L": "LATERAL", "": ""}[row["view"]]
    assert record["views"].tolist() == [view.encode()]
    assert record["patient_id"].decode() == row["patient_group"]
    labels = dict(zip(contract.LABELS, record["labels"].tolist()))
    if row["label"] == "unlabeled":
      assert set(labels.values()) == {-2}
    else:
      assert labels[row["label"]] == 1 and sum(v == 1 for v in labels.values()) == 1
      assert sum(v == 0 for v in labels.values()) == 2 and list(labels.values()).count(-2) == 13
    notes = row["clinical_notes"].strip()
    assert record["notes"].decode() == notes
    assert np.array_equal(record["entities"], entities.extract(notes))
    assert record["source"] == b"covid_cxr" and record["findings"] == record["impression"] == b""
    assert [record[k] for k in covid_cxr.OUTCOMES] == [
        {"Y": 1, "N": 0}.get(row[k], -1) for k in covid_cxr.OUTCOMES]


def test_manifest_sha256_matches_shards(covid_data_dir):
  version_dir = Path(covid_data_dir) / VERSION_DIR
  listed = _shards(covid_data_dir)
  assert set(listed) == {p.name for p in version_dir.glob("*.array_record-*")}
  for name, sha in listed.items():
    assert hashlib.sha256((version_dir / name).read_bytes()).hexdigest() == sha


def test_cli_in_a_new_process_writes_identical_shards(covid_data_dir, shared_data, tmp_path):
  # A separate process: protobuf map order can differ between processes, not within one.
  subprocess.run([sys.executable, "-m", "medjax.cli.prepare", "covid_cxr",
                  "--src", str(shared_data / "covid-chestxray"), "--out", str(tmp_path)],
                 check=True, capture_output=True)
  assert _shards(tmp_path) == _shards(covid_data_dir)


UPSTREAM_COLUMNS = ["patientid", "finding", "survival", "intubated", "went_icu",
                    "needed_supplemental_O2", "modality", "folder", "filename", "clinical_notes"]


def _upstream_fixture(root: Path) -> Path:
  """A tiny checkout of the upstream layout: every image kind and failure the converter handles."""
  src = root / "upstream"
  (src / "images").mkdir(parents=True)
  gray = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
  Image.fromarray(gray, "L").save(src / "images" / "gray.png")
  # The same X-ray posted again under another patient id (other file bytes, same pixels).
  Image.fromarray(gray, "L").save(src / "images" / "gray_again.png", compress_level=9)
  rgba = np.zeros((32, 40, 4), np.uint8)
  rgba[..., :3], rgba[:, :20, 3] = 200, 255  # right half transparent over bright colour
  Image.fromarray(rgba, "RGBA").save(src / "images" / "rgba.png")
  deep = (np.arange(40 * 50).reshape(40, 50) % 4096).astype(np.uint16)  # 12-bit data in 16 bits
  Image.fromarray(deep).save(src / "images" / "deep.png")
  Image.fromarray(gray, "L").save(src / "images" / "ct.png")
  (src / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
  rows = [
      ["p1", "Pneumonia/Viral/COVID-19", "Y", "N", "", "Y", "X-ray", "images", "gray.png", "n1"],
      ["p1", "COVID-19", "", "", "", "", "CT", "images", "ct.png", "ct"],
      ["p2", "No Finding", "N", "", "N", "", "X-ray", "images", "rgba.png", ""],
      ["p3", "todo", "", "", "", "", "X-ray", "images", "deep.png", "n3"],
      ["p4", "Pneumonia", "", "", "", "", "X-ray", "images", "missing.png", "n4"],
      ["p5", "SARS", "", "", "", "", "X-ray", "images", "corrupt.png", "n5"],
      ["p6", "Streptococcus", "", "", "", "", "X-ray", "images", "gray_again.png", "n6"],
  ]
  with open(src / "metadata.csv", "w", newline="") as f:
    csv.writer(f).writerows([UPSTREAM_COLUMNS, *rows])
  return src


def test_upstream_layout(tmp_path):
  m = covid_cxr.prepare(_upstream_fixture(tmp_path), tmp_path / "out", val_fraction=0.5)
  assert m["rows_read"] == 7 and m["excluded_not_xray"] == 1
  assert [(s["row"], s["file"]) for s in m["skipped"]] == [(5, "images/missing.png"),
                                                           (6, "images/corrupt.png")]
  assert m["skipped"][0]["reason"] == "missing image file"
  assert m["skipped"][1]["reason"].startswith("cannot decode image")
  assert m["merged_patients"] == [["p1", "p6"]]  # identical X-ray under two ids: one split group

  records = {}
  for split in ("train", "validation"):
    for r in _records(tmp_path / "out", split):
      records[r["study_id"].decode()] = (split, r)
  assert sorted(records) == ["deep.png", "gray.png", "gray_again.png", "rgba.png"]
  assert records["gray.png"][0] == records["gray_again.png"][0]
  pixels = {k: np.asarray(Image.open(io.BytesIO(r["images"][0]))) for k, (_, r) in records.items()}
  assert all(p.dtype == np.uint8 and p.ndim == 2 for p in pixels.values())
  assert pixels["deep.png"].shape == (40, 50) and pixels["deep.png"].max() == 255  # stretched
  assert (pixels["rgba.png"][:, 20:] == 0).all() and (pixels["rgba.png"][:, :20] == 200).all()

  gray = records["gray.png"][1]
  assert (gray["patient_id"], gray["notes"]) == (b"p1", b"n1")
  assert [gray[k] for k in covid_cxr.OUTCOMES] == [1, 0, -1, 1]
  positive = {k: [contract.LABELS[i] for i in np.flatnonzero(r["labels"] == 1)]
              for k, (_, r) in records.items()}
  assert positive == {"gray.png": ["covid19"], "gray_again.png": ["other_pneumonia"],
                      "rgba.png": ["no_finding"], "deep.png": []}


def test_missing_column_names_column_and_file(tmp_path):
  src = _upstream_fixture(tmp_path)
  with open(src / "metadata.csv", newline="") as f:
    rows = [r[:-1] for r in csv.reader(f)]  # drop clinical_notes
  with open(src / "metadata.csv", "w", newline="") as f:
    csv.writer(f).writerows(rows)
  with pytest.raises(ValueError, match=r"metadata\.csv.*'clinical_notes'"):
    covid_cxr.prepare(src, tmp_path / "out")
