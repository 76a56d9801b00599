"""Grain pipeline on the prepared real sample: shapes, determinism, resume, per-process sharding."""
import collections
import hashlib
import json

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from medjax.data import pipeline

KEYS = {"image": (np.float32, (16, 16, 1)), "text_ids": (np.int32, (24,)),
        "text_mask": (np.bool_, (24,)), "patient": (np.int32, ())}


def _cfg(data_dir, **overrides) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict(dict(
      dir=str(data_dir), name="covid_cxr", tokenizer="", image_size=16, channels=1,
      text_field="notes", text_len=24, mean=0.5, std=0.25, crop_scale=(0.6, 1.0),
      num_workers=0, prefetch_buffer=2))
  cfg.update(overrides)
  return cfg


def _take(it, n: int) -> list[dict]:
  return [next(it) for _ in range(n)]


def _run(cfg, n: int, **kwargs) -> list[dict]:
  it = pipeline.make_iterator(cfg, **kwargs)
  try:
    return _take(it, n) if n else list(it)
  finally:
    it.close()


def _same(a: list[dict], b: list[dict]) -> bool:
  return len(a) == len(b) and all(
      x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


def _examples(batches: list[dict]) -> collections.Counter:
  """Multiset of examples, each identified by the hash of its arrays."""
  return collections.Counter(
      hashlib.sha256(b"".join(batch[k][i].tobytes() for k in KEYS)).hexdigest()
      for batch in batches for i in range(len(batch["patient"])))


def test_batch_shapes_and_dtypes(covid_data_dir):
  for train in (True, False):
    (batch,) = _run(_cfg(covid_data_dir), 1, batch_size=8, seed=0, train=train,
                    split="train" if train else "validation")
    assert batch.keys() == KEYS.keys()
    for key, (dtype, shape) in KEYS.items():
      assert batch[key].dtype == dtype and batch[key].shape == (8, *shape), key
    assert np.isfinite(batch["image"]).all() and batch["image"].std() > 0.1
    assert batch["text_mask"][:, :2].all() and (batch["text_ids"][:, 0] == 2).all()  # BOS
    assert (batch["patient"] >= 0).all()


def test_eval_keeps_only_pairs_and_the_remainder(covid_data_dir):
  source = tfds.data_source("covid_cxr", split="validation", data_dir=str(covid_data_dir))
  records = [source[i] for i in range(len(source))]
  pairs = [r for r in records if r["image"] and r["notes"].strip()]
  assert 0 < len(pairs) < len(records)  # the sample has X-rays without notes
  batches = _run(_cfg(covid_data_dir), 0, batch_size=16, split="validation", seed=0, train=False)
  assert [len(b["patient"]) for b in batches[:-1]] == [16] * (len(batches) - 1)
  assert sum(len(b["patient"]) for b in batches) == len(pairs)
  expected = collections.Counter(pipeline.patient_hash("covid_cxr", r["patient_id"].decode())
                                 for r in pairs)
  assert collections.Counter(np.concatenate([b["patient"] for b in batches]).tolist()) == expected


def test_same_seed_same_batches_other_seed_other_batches(covid_data_dir):
  cfg = _cfg(covid_data_dir)
  first = _run(cfg, 3, batch_size=8, seed=0)
  assert _same(first, _run(cfg, 3, batch_size=8, seed=0))
  other = _run(cfg, 3, batch_size=8, seed=1)
  assert not np.array_equal(first[0]["image"], other[0]["image"])
  assert not np.array_equal(first[0]["patient"], other[0]["patient"])


def test_each_epoch_covers_every_pair_in_a_new_order(covid_data_dir):
  cfg = _cfg(covid_data_dir)
  one_pass = np.concatenate([b["patient"] for b in _run(cfg, 0, batch_size=8, seed=0, train=False)])
  n = len(one_pass)
  stream = np.concatenate([b["patient"] for b in _run(cfg, -(-2 * n // 8), batch_size=8, seed=0)])
  first, second = stream[:n], stream[n:2 * n]
  assert collections.Counter(first.tolist()) == collections.Counter(one_pass.tolist())
  assert collections.Counter(second.tolist()) == collections.Counter(one_pass.tolist())
  assert not np.array_equal(first, second)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_resume_from_state(covid_data_dir, num_workers):
  cfg = _cfg(covid_data_dir, num_workers=num_workers)
  it = pipeline.make_iterator(cfg, batch_size=8, seed=3)
  try:
    _take(it, 2)
    state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
    expected = _take(it, 3)
  finally:
    it.close()
  resumed = pipeline.make_iterator(cfg, batch_size=8, seed=3)
  try:
    resumed.set_state(state)
    assert _same(_take(resumed, 3), expected)
  finally:
    resumed.close()
  if num_workers:  # workers produce exactly what the in-process pipeline does
    assert _same(_run(_cfg(covid_data_dir), 5, batch_size=8, seed=3)[2:], expected)


def test_two_processes_split_the_global_batch(covid_data_dir):
  cfg = _cfg(covid_data_dir)
  whole = _run(cfg, 3, batch_size=8, seed=0, process_index=0, process_count=1)
  parts = [_run(cfg, 3, batch_size=8, seed=0, process_index=p, process_count=2) for p in (0, 1)]
  for step in range(3):
    assert len(parts[0][step]["patient"]) == 4
    assert _examples([parts[0][step]]) + _examples([parts[1][step]]) == _examples([whole[step]])
  # an eval pass: every example exactly once, shared out between the processes
  whole = _run(cfg, 0, batch_size=8, split="validation", seed=0, train=False)
  parts = [_run(cfg, 0, batch_size=8, split="validation", seed=0, train=False, process_index=p,
                process_count=2) for p in (0, 1)]
  assert _examples(parts[0]) + _examples(parts[1]) == _examples(whole)
  assert abs(sum(_examples(parts[0]).values()) - sum(_examples(parts[1]).values())) <= 1


def test_global_batch_must_divide(covid_data_dir):
  with pytest.raises(ValueError, match="not divisible"):
    pipeline.make_iterator(_cfg(covid_data_dir), batch_size=9, seed=0, process_index=0,
                           process_count=2)
