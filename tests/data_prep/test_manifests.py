"""Every prepared dataset's manifest matches its shards and accounts for every source item
(converter tests check the counts against their sources); the tokenizer trains on several."""
import hashlib
import json
from pathlib import Path

import pytest
import sentencepiece as spm
import tensorflow_datasets as tfds

from medjax import contract
from medjax.data_prep import iu_xray, ncbi_disease, tokenizer

import layouts

REAL = {"covid_cxr": "covid_data_dir", "iu_xray": "text_data_dir", "ncbi_disease": "text_data_dir"}


@pytest.mark.parametrize("name", list(REAL))
def test_manifest_matches_shards_and_sources(name, request):
  data_dir = Path(request.getfixturevalue(REAL[name]))
  version_dir = Path(tfds.builder(name, data_dir=str(data_dir)).data_dir)
  m = json.loads((version_dir / "manifest.json").read_text())
  assert (m["name"], m["schema_version"]) == (name, contract.SCHEMA_VERSION)
  listed = {f: sha for s in m["splits"].values() for f, sha in s["shards"].items()}
  assert set(listed) == {p.name for p in version_dir.glob("*.array_record-*")}
  for f, sha in listed.items():
    assert hashlib.sha256((version_dir / f).read_bytes()).hexdigest() == sha
  for split, info in m["splits"].items():
    if info["num_examples"]:
      source = tfds.data_source(name, split=split, data_dir=str(data_dir))
      assert len(source) == info["num_examples"]
  assert m["records"] == sum(s["num_examples"] for s in m["splits"].values())
  whole = [s for s in m["skipped"] if "part" not in s]  # skips of a whole source item
  assert m["records"] + len(whole) + m.get("excluded_not_xray", 0) == m["rows_read"]
  assert sum(m["skipped_by_reason"].values()) == len(m["skipped"])
  assert all(set(s) >= {"reason"} and set(s) & {"file", "row", "id"} for s in m["skipped"])


def test_tokenizer_trains_on_several_datasets(tmp_path):
  out = tmp_path / "out"
  iu_xray.prepare(layouts.iu_tgz(tmp_path / "r.tgz", {
      f"{i}.xml": layouts.iu_report(f"CXR{i}", f"Heart size normal {i}.", "No effusion.")
      for i in range(6)}), out)
  ncbi_disease.prepare(layouts.ncbi(tmp_path / "ncbi", {
      folder: [layouts.ncbi_doc(f"{k}{i}", "Hereditary breast cancer.", "BRCA1 mutations.")
               for i in range(3)] for k, folder in enumerate(("train", "devel", "test"))}), out)
  path = tokenizer.train_tokenizer(out, names=("iu_xray", "ncbi_disease"), vocab_size=60)
  assert path == Path(tfds.builder("iu_xray", data_dir=str(out)).data_dir) / "tokenizer.model"
  entry = json.loads((path.parent / "manifest.json").read_text())["tokenizer"]
  assert entry["trained_on"]["datasets"] == ["iu_xray", "ncbi_disease"]
  assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
  sp = spm.SentencePieceProcessor(model_file=str(path))
  assert sp.unk_id() not in sp.encode("effusion BRCA1")  # text of both datasets is covered
  alone = tokenizer.train_model(tokenizer.train_texts(out, "iu_xray"), 60)
  assert alone != path.read_bytes()
