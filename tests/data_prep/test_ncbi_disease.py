"""ncbi_disease on the real corpus: 792 abstracts over the corpus's train/devel/test files."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from medjax.data_prep import entities

FOLDERS = {"train": "train", "devel": "validation", "test": "test"}


def _corpus(shared_data) -> dict[str, list[tuple[str, str, str]]]:
  """Split -> (pmid, title, abstract) per document, parsed here independently."""
  out = {}
  for folder, split in FOLDERS.items():
    (path,) = (shared_data / "text" / "ncbi_disease" / "original-data" / folder).glob("*.txt")
    text = path.read_text()
    titles = re.findall(r"^(\d+)\|t\|(.*)$", text, re.M)
    abstracts = dict(re.findall(r"^(\d+)\|a\|(.*)$", text, re.M))
    out[split] = [(pmid, title.strip(), abstracts[pmid].strip()) for pmid, title in titles]
  return out


@pytest.fixture(scope="module")
def records(text_data_dir) -> dict[str, dict[str, dict]]:
  out = {}
  for split in FOLDERS.values():
    source = tfds.data_source("ncbi_disease", split=split, data_dir=str(text_data_dir))
    out[split] = {r["study_id"].decode(): r for r in source.__getitems__(range(len(source)))}
  return out


def test_counts_match_the_corpus_files(text_data_dir, shared_data, records):
  corpus = _corpus(shared_data)
  documents = sum(len(docs) for docs in corpus.values())
  unique = {pmid for docs in corpus.values() for pmid, *_ in docs}
  assert documents == 793 and len(unique) == 792  # one PMID appears twice in the train file
  manifest = json.loads((Path(text_data_dir) / "ncbi_disease" / "2.0.0" /
                         "manifest.json").read_text())
  assert manifest["rows_read"] == documents and manifest["records"] == len(unique)
  (skip,) = manifest["skipped"]
  assert skip["id"] == "8528200" and skip["reason"].startswith("duplicate study id")
  for split, docs in corpus.items():
    assert set(records[split]) == {pmid for pmid, *_ in docs}
    assert manifest["splits"][split]["num_examples"] == len(records[split])
  assert {s: len(r) for s, r in records.items()} == {"train": 592, "validation": 100, "test": 100}


def test_records_hold_title_and_abstract(shared_data, records):
  for split, docs in _corpus(shared_data).items():
    for pmid, title, abstract in docs[:10]:
      r = records[split][pmid]
      assert r["notes"].decode() == f"{title}\n{abstract}"
      assert r["patient_id"].decode() == pmid and r["source"] == b"ncbi_disease"
      assert len(r["images"]) == 0 and r["findings"] == r["impression"] == b""
      assert set(r["labels"].tolist()) == {-2}
      assert np.array_equal(r["entities"], entities.extract(f"{title}\n{abstract}"))
