"""Opening a prepared dataset (medjax.data.mixture.open_source) on the real covid sample: shards
verified against the manifest (hashed once per file version), the sampling index read instead of
the records and equal to a full scan, each record checked when it is read."""
import hashlib
import json
import logging
import os
import shutil

import numpy as np
import pytest

from medjax import contract
from medjax.data import mixture, pipeline

import synthetic_data as sd

SHARD = "covid_cxr-train.array_record-00000-of-00001"


@pytest.fixture
def data_dir(covid_data_dir, tmp_path):
  """A copy of the prepared real sample, to break."""
  shutil.copytree(covid_data_dir, tmp_path / "tfds")
  return tmp_path / "tfds"


def _version_dir(data_dir):
  return data_dir / "covid_cxr" / "2.0.0"


def _cfg(data_dir):
  return sd.synth_cfg(dir=str(data_dir), name="covid_cxr", image_size=16, patch_size=8,
                      text_len=16, sentence_len=8)


def _batches(cfg, sources, n, **kwargs):
  it = pipeline.from_sources(cfg, sources, pipeline.load_tokenizer(cfg), batch_size=8, seed=0,
                             **kwargs)
  try:
    return [next(it) for _ in range(n)] if n else list(it)
  finally:
    it.close()


def test_index_gives_the_batches_of_a_full_scan(covid_data_dir):
  for split in ("validation", "train"):  # eval passes read index.positions in order
    indexed = mixture.open_source(str(covid_data_dir), "covid_cxr", split)
    scanned = mixture.scan(mixture.Source("covid_cxr", indexed.records))
    np.testing.assert_array_equal(indexed.index.positions, scanned.positions)
    np.testing.assert_array_equal(indexed.index.has_image, scanned.has_image)
    assert indexed.index.patients == scanned.patients
  cfg = _cfg(covid_data_dir)
  a = _batches(cfg, [indexed], 3)  # train
  b = _batches(cfg, [mixture.Source("covid_cxr", indexed.records)], 3)
  assert all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def _flip_byte(path, keep_times=False):
  st = os.stat(path)
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF
  path.write_bytes(bytes(data))
  if keep_times:
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _truncate(path):
  path.write_bytes(path.read_bytes()[:-100])


BROKEN = {  # how a shard is broken -> the error
    "corrupted": (_flip_byte, f"covid_cxr: shard .*{SHARD} does not match its manifest"),
    "truncated": (_truncate, f"covid_cxr: shard .*{SHARD} has .* bytes, its manifest says"),
    "swapped": (lambda p: shutil.copy(p.with_name(SHARD.replace("train", "validation")), p),
                f"covid_cxr: shard .*{SHARD} has .* bytes"),
    "missing": (lambda p: p.unlink(), f"covid_cxr: shard .*{SHARD} is missing"),
}


@pytest.mark.parametrize("how", list(BROKEN))
def test_broken_shard_is_an_error_naming_file_and_dataset(data_dir, how):
  breaks, error = BROKEN[how]
  breaks(_version_dir(data_dir) / SHARD)
  with pytest.raises(ValueError, match=error):
    pipeline.make_iterator(_cfg(data_dir), batch_size=8, seed=0)


def test_shards_are_hashed_once_and_again_when_changed(data_dir, caplog):
  with caplog.at_level(logging.INFO, "medjax.data.shards"):
    mixture.open_source(str(data_dir), "covid_cxr", "train")
    assert "hashing 1 shard(s) once" in caplog.text
    caplog.clear()
    mixture.open_source(str(data_dir), "covid_cxr", "train")
    assert "hashing" not in caplog.text  # the cached hash of this file version
  _flip_byte(_version_dir(data_dir) / SHARD, keep_times=True)  # same size and mtime
  with pytest.raises(ValueError, match="does not match its manifest"):
    mixture.open_source(str(data_dir), "covid_cxr", "train")


def test_broken_index_or_manifest_is_an_error(data_dir):
  version_dir = _version_dir(data_dir)
  index = version_dir / contract.index_file("covid_cxr", "train")
  index.write_text(index.read_text().replace('"has_image":[1', '"has_image":[0'))
  with pytest.raises(ValueError, match="covid_cxr-train.index.json does not match its manifest"):
    mixture.open_source(str(data_dir), "covid_cxr", "train")
  (version_dir / "manifest.json").unlink()
  with pytest.raises(ValueError, match="covid_cxr: no readable manifest.json"):
    mixture.open_source(str(data_dir), "covid_cxr", "train")


def _rewrite(version_dir, change):
  """Applies `change(manifest)` and writes the manifest back."""
  manifest = json.loads((version_dir / "manifest.json").read_text())
  change(manifest)
  (version_dir / "manifest.json").write_text(json.dumps(manifest))


def test_dataset_without_index_is_scanned_with_a_warning(data_dir, caplog):
  _rewrite(_version_dir(data_dir), lambda m: m["splits"]["train"].pop("index"))
  with caplog.at_level(logging.WARNING):
    source = mixture.open_source(str(data_dir), "covid_cxr", "train")
  assert source.index is None
  assert "prepared without a sampling index" in caplog.text and "Re-run" in caplog.text
  assert len(_batches(_cfg(data_dir), [source], 1)[0]["patient"]) == 8


def test_index_of_other_records_fails_when_read(data_dir):
  """An index whose sha256 the manifest lists but that describes other records (e.g. restored
  from another build) is caught at the first record it misdescribes."""
  version_dir = _version_dir(data_dir)
  path = version_dir / contract.index_file("covid_cxr", "train")
  index = json.loads(path.read_text())
  index["patient_of"] = index["patient_of"][::-1]
  data = json.dumps(index).encode()
  path.write_bytes(data)
  sha = hashlib.sha256(data).hexdigest()
  _rewrite(version_dir, lambda m: m["splits"]["train"]["index"].update(sha256=sha))
  source = mixture.open_source(str(data_dir), "covid_cxr", "train")
  with pytest.raises(ValueError, match="is not the one its sampling index describes"):
    _batches(_cfg(data_dir), [source], 4)


def test_malformed_record_is_an_error_when_read(synth_tokenizer):
  """Records are checked against the schema as they are read, not at startup."""
  records = sd.cxr_records("s", 4, seed=0)
  records[1] = dict(records[1], labels=np.zeros(3, np.int8))
  full = mixture.scan(mixture.Source("s", sd.cxr_records("s", 4, seed=0)))
  source = mixture.Source("s", records, index=full)
  it = pipeline.from_sources(sd.synth_cfg(), [source], synth_tokenizer, batch_size=2, seed=0,
                             train=False)
  study = records[1]["study_id"].decode()
  try:
    with pytest.raises(ValueError, match=rf"s: study {study}: labels has shape \(3,\)"):
      for _ in range(len(records)):
        next(it)
  finally:
    it.close()
