"""Grain pipeline: the contract's batch keys, unpaired rows, determinism, resume, mixture
weights, patient pairs, per-process sharding and read-time checks.

In-memory synthetic sources (tests/data/synthetic_data.py) keep these fast and exact; the
real-data tests at the end run the same checks on the prepared sample."""
import collections
import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from medjax import contract
from medjax.data import pipeline, transforms
from medjax.data.mixture import Source
from medjax.data_prep import tokenizer as tokenizer_prep

import synthetic_data as sd

CONTRACTS = Path(__file__).resolve().parents[2] / "docs" / "contracts.md"


def _contract_keys() -> set[str]:
  """Key names of the batch table in docs/contracts.md: the pipeline must produce exactly these."""
  batch_section = CONTRACTS.read_text().split("## Batch", 1)[1].split("\n## ", 1)[0]
  rows = [ln.split("|")[1] for ln in batch_section.splitlines() if ln.startswith("| `")]
  return {k for row in rows for k in re.findall(r"`(\w+)`", row)}


def _specs(cfg) -> dict:
  return {k: (dtype, shape) for k, (shape, dtype) in contract.batch_specs(cfg).items()}


def _run(sources, tokenizer, n: int, cfg=None, **kwargs) -> list[dict]:
  kwargs = {"batch_size": 8, "seed": 0, **kwargs}
  it = pipeline.from_sources(cfg or sd.synth_cfg(), sources, tokenizer, **kwargs)
  try:
    return [next(it) for _ in range(n)] if n else list(it)
  finally:
    it.close()


def _same(a: list[dict], b: list[dict]) -> bool:
  return len(a) == len(b) and all(
      x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


def _rows(batches: list[dict]) -> collections.Counter:
  """Multiset of rows, each identified by the hash of all its arrays."""
  return collections.Counter(
      hashlib.sha256(b"".join(batch[k][i].tobytes() for k in sorted(batch))).hexdigest()
      for batch in batches for i in range(len(batch["patient"])))


def _patients(records) -> collections.Counter:
  return collections.Counter(transforms.patient_hash(r["source"].decode(), r["patient_id"].decode())
                             for r in records)


def _pair_rows(batch) -> int:
  """Rows with an image whose patient has another image row in the batch."""
  patients = batch["patient"][batch["has_image"]]
  counts = collections.Counter(patients.tolist())
  return sum(1 for p in patients.tolist() if counts[p] > 1)


@pytest.mark.parametrize("train", [True, False])
def test_every_contract_key_with_its_dtype_and_shape(synth_sources, synth_tokenizer, train):
  cfg = sd.synth_cfg()
  specs = _specs(cfg)
  assert set(specs) == _contract_keys()
  for batch in _run(synth_sources, synth_tokenizer, 3, train=train):
    assert set(batch) == set(specs)
    for key, (dtype, shape) in specs.items():
      assert (batch[key].dtype, batch[key].shape) == (dtype, (8, *shape)), key
    assert np.isfinite(batch["image"]).all() and np.isfinite(batch["image2"]).all()


def test_rows_without_image_or_text_are_zero_filled(synth_tokenizer):
  records = sd.cxr_records("synth_cxr", 20, seed=1) + sd.report_records("synth_reports", 20, 2)
  batches = _run([Source("mixed", records)], synth_tokenizer, 0, batch_size=8, train=False)
  b = {k: np.concatenate([x[k] for x in batches]) for k in batches[0]}
  no_image, no_text = ~b["has_image"], ~b["has_text"]
  assert no_image.any() and no_text.any() and (b["has_image"] & b["has_text"]).any()
  for key in ("image", "image2", "image_entities", "mae_noise"):
    assert not b[key][no_image].any(), key
  for key in ("text_ids", "text_mask", "mlm_ids", "mlm_targets", "mlm_weights", "sr_context_ids",
              "sr_target_ids", "findings_ids", "impression_ids", "text_entities", "has_sentence",
              "has_findings_impression"):
    assert not b[key][no_text].any(), key
  assert b["image"][b["has_image"]].std() > 0.1
  assert (b["text_ids"][b["has_text"], 0] == synth_tokenizer.bos_id).all()


def test_text_targets(synth_sources, synth_tokenizer):
  tok = synth_tokenizer
  b = {k: np.concatenate([x[k] for x in _run(synth_sources, tok, 6)]) for k in _specs(
      sd.synth_cfg())}
  text = b["has_text"]
  chosen = b["mlm_weights"] > 0
  assert (chosen.sum(1)[text] >= 1).all() and not chosen[~b["text_mask"]].any()
  assert not np.isin(b["text_ids"][chosen], [tok.bos_id, tok.eos_id, tok.pad_id]).any()
  np.testing.assert_array_equal(b["mlm_targets"][chosen], b["text_ids"][chosen])
  np.testing.assert_array_equal(b["mlm_ids"][~chosen], b["text_ids"][~chosen])
  assert 0.1 < chosen.sum() / (b["text_mask"].sum() - 2 * text.sum()) < 0.2
  sentence = b["has_sentence"]
  assert sentence.any() and not sentence[~text].any()
  assert ((b["sr_context_ids"] == tok.mask_id).sum(1)[sentence] == 1).all()
  assert (b["sr_target_ids"][sentence, 0] == tok.bos_id).all()
  fi = b["has_findings_impression"]
  assert fi.any() and b["findings_mask"][fi].any(1).all() and b["impression_mask"][fi].any(1).all()


def test_entity_vectors_from_labels_and_text(synth_tokenizer):
  rng = np.random.default_rng(0)
  paired = sd.record("s", "p1", "a", images=[sd.png(rng)], notes="Mild cardiomegaly. No edema.",
                     labels=["pneumothorax", "other_pneumonia"],
                     found={"cardiomegaly": 1, "edema": -1, "pleural_effusion": 2})
  image_only = sd.record("s", "p2", "b", images=[sd.png(rng)], labels=["atelectasis"])
  text_only = sd.record("s", "p3", "c", findings="No edema.", found={"edema": -1, "fracture": 1})
  (b,) = _run([Source("s", [paired, image_only, text_only])], synth_tokenizer, 0, batch_size=4,
              train=False)

  def names(vec):
    return {contract.ENTITIES[i] for i in np.flatnonzero(vec)}

  # labels (positives; other_pneumonia is a pneumonia) + the entities present in the paired text
  assert names(b["image_entities"][0]) == {"pneumothorax", "pneumonia", "cardiomegaly"}
  assert names(b["text_entities"][0]) == {"cardiomegaly"}  # negated, uncertain: not present
  assert names(b["image_entities"][1]) == {"atelectasis"} and not b["text_entities"][1].any()
  assert not b["image_entities"][2].any() and names(b["text_entities"][2]) == {"fracture"}
  # A withheld label (a downstream target) adds nothing; the paired text still does.
  (b,) = _run([Source("s", [paired])], synth_tokenizer, 0, batch_size=1, train=False,
              cfg=sd.synth_cfg(withheld_labels=("other_pneumonia",)))
  assert names(b["image_entities"][0]) == {"pneumothorax", "cardiomegaly"}
  with pytest.raises(ValueError, match="withheld_labels.*'covid'"):
    _run([Source("s", [paired])], synth_tokenizer, 0, batch_size=1, train=False,
         cfg=sd.synth_cfg(withheld_labels=("covid",)))


def test_multi_view_study_uses_a_frontal_view(synth_tokenizer):
  rng = np.random.default_rng(0)
  study = sd.record("s", "p", "a", images=[sd.png(rng, 0), sd.png(rng, 255), sd.png(rng, 0)],
                    views=["LATERAL", "PA", ""])
  for train in (False, True):
    (b,) = _run([Source("s", [study, study])], synth_tokenizer, 1, batch_size=2, train=train)
    assert (b["image"] > 0).all() and (b["image2"] > 0).all()  # only the PA view is white


def test_same_seed_same_batches_other_seed_other_batches(synth_sources, synth_tokenizer):
  first = _run(synth_sources, synth_tokenizer, 4, seed=0)
  assert _same(first, _run(synth_sources, synth_tokenizer, 4, seed=0))
  other = _run(synth_sources, synth_tokenizer, 4, seed=1)
  assert not np.array_equal(first[0]["patient"], other[0]["patient"])
  assert not np.array_equal(first[0]["image"], other[0]["image"])


def test_two_views_are_augmented_independently(synth_sources, synth_tokenizer):
  (b,) = _run(synth_sources, synth_tokenizer, 1)
  rows = b["has_image"]
  assert not np.array_equal(b["image"][rows], b["image2"][rows])


def test_each_epoch_covers_every_record(synth_sources, synth_tokenizer):
  records = synth_sources[0].records
  units = -(-len(records) // 2)
  batches = _run(synth_sources, synth_tokenizer, units, batch_size=4)  # two epochs
  patients = np.concatenate([b["patient"] for b in batches])
  expected = _patients(records) + collections.Counter({-1: len(records) % 2})
  assert collections.Counter(patients[:2 * units].tolist()) == expected
  assert collections.Counter(patients[2 * units:].tolist()) == expected
  assert not np.array_equal(patients[:2 * units], patients[2 * units:])


def test_patient_pairs_in_every_batch(synth_tokenizer):
  sources = [Source("a", sd.cxr_records("a", 150, seed=5))]
  counted = {}
  for pairs in (0.0, 0.5):
    batches = _run(sources, synth_tokenizer, 30, sd.synth_cfg(patient_pairs=pairs), batch_size=16)
    counted[pairs] = [_pair_rows(b) for b in batches]
  # 8 units per batch, about half of them planned pairs: floor(8p) >= 3 pairs in every batch
  assert min(counted[0.5]) >= 6 and np.mean(counted[0.5]) >= 8
  # without planned pairs, same-patient images meet by chance only, in few batches
  assert sum(c > 0 for c in counted[0.0]) < 15 and np.mean(counted[0.0]) < 2


def test_mixture_weights(synth_tokenizer):
  a = sd.cxr_records("a", 20, seed=1)
  a, b = a[:len(a) // 2 * 2], sd.report_records("b", 26, seed=2)  # even: no empty slots
  sources = [Source("a", a, weight=3.0), Source("b", b, weight=1.0)]
  batches = _run(sources, synth_tokenizer, 40, batch_size=16)
  patients = np.concatenate([x["patient"] for x in batches]).tolist()
  from_a = sum(p in _patients(a) for p in patients)
  from_b = sum(p in _patients(b) for p in patients)
  assert from_a + from_b == len(patients)
  assert abs(from_a / (from_a + from_b) - 0.75) < 0.02
  # per batch too: the interleave is deterministic, not a coin flip per unit
  share = [np.isin(x["patient"], list(_patients(a))).sum() for x in batches]
  assert min(share) >= 10


@pytest.mark.parametrize("num_workers", [0, 1])
def test_resume_from_state(synth_sources, synth_tokenizer, num_workers):
  cfg = sd.synth_cfg(num_workers=num_workers)
  it = pipeline.from_sources(cfg, synth_sources, synth_tokenizer, batch_size=8, seed=3)
  try:
    for _ in range(2):
      next(it)
    state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
    expected = [next(it) for _ in range(3)]
  finally:
    it.close()
  resumed = pipeline.from_sources(cfg, synth_sources, synth_tokenizer, batch_size=8, seed=3)
  try:
    resumed.set_state(state)
    assert _same([next(resumed) for _ in range(3)], expected)
  finally:
    resumed.close()
  if num_workers:  # workers produce exactly what the in-process pipeline does
    assert _same(_run(synth_sources, synth_tokenizer, 5, seed=3)[2:], expected)


def test_two_processes_split_the_global_batch(synth_tokenizer):
  sources = [Source("a", sd.cxr_records("a", 20, seed=1), 2.0),
             Source("b", sd.report_records("b", 9, seed=2), 1.0)]
  whole = _run(sources, synth_tokenizer, 4, batch_size=8)
  parts = [_run(sources, synth_tokenizer, 4, batch_size=8, process_index=p, process_count=2)
           for p in (0, 1)]
  for step in range(4):
    assert len(parts[0][step]["patient"]) == 4
    assert _rows([parts[0][step]]) + _rows([parts[1][step]]) == _rows([whole[step]])
  # an eval pass: every row exactly once, shared out between the processes
  whole = _run(sources, synth_tokenizer, 0, batch_size=8, train=False)
  parts = [_run(sources, synth_tokenizer, 0, batch_size=8, train=False, process_index=p,
                process_count=2) for p in (0, 1)]
  assert _rows(parts[0]) + _rows(parts[1]) == _rows(whole)
  assert abs(sum(_rows(parts[0]).values()) - sum(_rows(parts[1]).values())) <= 1


def test_eval_is_one_pass_over_usable_records_and_logs_skips(synth_tokenizer, caplog):
  records = sd.cxr_records("a", 12, seed=4)
  empty = sd.record("a", "nobody", "empty-study")  # neither image nor text
  with caplog.at_level(logging.INFO):
    batches = _run([Source("a", records + [empty])], synth_tokenizer, 0, batch_size=8,
                   train=False)
  sizes = [len(b["patient"]) for b in batches]
  assert sizes[:-1] == [8] * (len(sizes) - 1) and sum(sizes) == len(records)
  assert collections.Counter(np.concatenate([b["patient"] for b in batches]).tolist()) == \
      _patients(records)
  assert "1 skipped" in caplog.text and "empty-study" in caplog.text


def test_undecodable_image_is_a_counted_logged_skip(synth_tokenizer, caplog):
  broken = sd.record("a", "p", "broken-study", images=[b"\x89PNG but not really"],
                     notes="Heart size is normal. No pneumothorax.")
  with caplog.at_level(logging.WARNING):
    (b,) = _run([Source("a", [broken, broken])], synth_tokenizer, 1, batch_size=2, train=False)
  assert not b["has_image"].any() and b["has_text"].all() and not b["image"].any()
  assert "broken-study" in caplog.text and "cannot be decoded" in caplog.text
  assert "2 undecodable" in caplog.text


def test_logs_never_contain_text(synth_sources, synth_tokenizer, caplog):
  with caplog.at_level(logging.DEBUG):
    _run(synth_sources, synth_tokenizer, 3)
    _run(synth_sources, synth_tokenizer, 1, train=False)
  assert caplog.text
  for phrase in sd.PHRASES:
    assert phrase not in caplog.text


def test_config_and_record_errors(synth_sources, synth_tokenizer):
  with pytest.raises(ValueError, match="not divisible"):
    _run(synth_sources, synth_tokenizer, 1, batch_size=6, process_count=2)
  v1 = dict(synth_sources[0].records[0])
  v1["image"] = v1.pop("images")
  with pytest.raises(ValueError, match="v1_source: record 0 lacks.*schema v2"):
    _run([Source("v1_source", [v1])], synth_tokenizer, 1)
  bad = dict(synth_sources[0].records[0], labels=np.zeros(3, np.int8))
  with pytest.raises(ValueError, match=r"bad_source: study s0-0: labels has shape \(3,\)"):
    _run([Source("bad_source", [bad])], synth_tokenizer, 1)
  with pytest.raises(ValueError, match="weights must be > 0"):
    pipeline.mixture.specs(sd.synth_cfg(sources=(dict(name="x", weight=0),)), "train")


# ---- The prepared real sample: covid_cxr (X-rays + notes) mixed with ncbi_disease (abstracts) --
def _real_cfg(data_dir, **overrides):
  sources = (dict(name="covid_cxr", weight=3.0), dict(name="ncbi_disease", weight=1.0))
  return sd.synth_cfg(**{"dir": str(data_dir), "image_size": 32, "patch_size": 8, "text_len": 64,
                         "sources": sources, **overrides})


def _real_run(data_dir, n, cfg=None, **kwargs):
  kwargs = {"batch_size": 16, "seed": 0, **kwargs}
  it = pipeline.make_iterator(cfg or _real_cfg(data_dir), **kwargs)
  try:
    return [next(it) for _ in range(n)] if n else list(it)
  finally:
    it.close()


def _records(data_dir, name, split):
  source = tfds.data_source(name, split=split, data_dir=str(data_dir), download=False)
  return [source[i] for i in range(len(source))]


def test_real_sample_keys_mixture_and_patient_pairs(real_data_dir):
  cfg = _real_cfg(real_data_dir)
  specs = _specs(cfg)
  batches = _real_run(real_data_dir, 20)
  covid = _patients(_records(real_data_dir, "covid_cxr", "train"))
  for b in batches:
    assert {k: (v.dtype, v.shape[1:]) for k, v in b.items()} == {
        k: (np.dtype(d), s) for k, (d, s) in specs.items()}
    assert len(b["patient"]) == 16
    # 3:1 by units: 6 of the 8 units are covid_cxr (X-rays), 2 are abstracts (text only)
    from_covid = np.isin(b["patient"], list(covid))
    assert from_covid.sum() + (b["patient"] == -1).sum() == 12
    assert not b["has_image"][~from_covid].any() and b["has_image"][from_covid].all()
    # about half of the covid units are same-patient pairs: floor(6 x 0.497) = 2 or more
    assert _pair_rows(b) >= 4
  rows = {k: np.concatenate([b[k] for b in batches]) for k in ("has_text", "has_sentence")}
  assert rows["has_text"].mean() > 0.5 and rows["has_sentence"].any()


def test_real_eval_pass_covers_every_record_once(real_data_dir):
  batches = _real_run(real_data_dir, 0, split="validation", train=False)
  records = (_records(real_data_dir, "covid_cxr", "validation")
             + _records(real_data_dir, "ncbi_disease", "validation"))
  assert sum(len(b["patient"]) for b in batches) == len(records)
  assert collections.Counter(np.concatenate([b["patient"] for b in batches]).tolist()) == \
      _patients(records)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_real_resume_from_state(real_data_dir, num_workers):
  cfg = _real_cfg(real_data_dir, num_workers=num_workers)
  it = pipeline.make_iterator(cfg, batch_size=16, seed=3)
  try:
    for _ in range(3):
      next(it)
    state = json.loads(json.dumps(it.get_state()))
    expected = [next(it) for _ in range(3)]
  finally:
    it.close()
  resumed = pipeline.make_iterator(cfg, batch_size=16, seed=3)
  try:
    resumed.set_state(state)
    assert _same([next(resumed) for _ in range(3)], expected)
  finally:
    resumed.close()
  assert _same(_real_run(real_data_dir, 6, seed=3)[3:], expected)  # = no workers, no restart


def test_real_two_processes_split_the_global_batch(real_data_dir):
  whole = _real_run(real_data_dir, 3)
  parts = [_real_run(real_data_dir, 3, process_index=p, process_count=2) for p in (0, 1)]
  for step in range(3):
    assert _rows([parts[0][step]]) + _rows([parts[1][step]]) == _rows([whole[step]])


def test_load_tokenizer_defaults_to_the_first_source(real_data_dir):
  tok = pipeline.load_tokenizer(_real_cfg(real_data_dir))
  path = real_data_dir / "covid_cxr" / "2.0.0" / "tokenizer.model"
  assert tok.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_real_text_only_reports(text_data_dir, tmp_path):
  """IU X-ray reports (findings + impression) and NCBI abstracts (notes), both without images."""
  names = ("iu_xray", "ncbi_disease")
  tokenizer = tokenizer_prep.train_tokenizer(text_data_dir, names=names, vocab_size=500,
                                             out=tmp_path / "tokenizer.model")
  cfg = _real_cfg(text_data_dir, tokenizer=str(tokenizer),
                  sources=tuple(dict(name=n, weight=1.0) for n in names))
  batches = _real_run(text_data_dir, 10, cfg)
  b = {k: np.concatenate([x[k] for x in batches]) for k in batches[0]}
  real = b["patient"] >= 0
  assert not b["has_image"].any() and not b["image"].any() and not b["image_entities"].any()
  assert b["has_text"][real].all()
  iu = np.isin(b["patient"], list(_patients(_records(text_data_dir, "iu_xray", "train"))))
  assert iu.sum() == pytest.approx(real.sum() / 2, abs=2)  # weights 1:1
  both = b["has_findings_impression"]
  assert both[iu].mean() > 0.5 and not both[~iu].any()
  fi = b["has_findings_impression"]
  assert b["findings_mask"][fi].any(1).all() and b["impression_mask"][fi].any(1).all()
  assert b["has_sentence"][real].mean() > 0.5
