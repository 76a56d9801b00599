"""DINO's multi-crop and iBOT's hidden patches in the Grain pipeline (medjax/data/transforms.py):
keys and shapes from the contract, deterministic, resumable, no other key changed, nothing made
when off. In-memory synthetic sources (16 px images, 4 px patches: 16 patches per crop)."""
import numpy as np
import pytest

from medjax import contract
from medjax.data import pipeline

import synthetic_data as sd

MULTI_CROP = dict(local_crops=3, local_crop_size=8, local_crop_scale=(0.05, 0.4),
                  ibot_mask_probability=0.5, ibot_mask_ratio=(0.1, 0.5))
OPTIONAL = {"local_crops", "ibot_patches"}


def _iterator(sources, tokenizer, cfg, seed=0, train=True):
  return pipeline.from_sources(cfg, sources, tokenizer, batch_size=8, seed=seed, train=train)


def _take(it, n):
  try:
    return [next(it) for _ in range(n)]
  finally:
    it.close()


def _same(a, b):
  return all(x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
             for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("train", [True, False])
def test_keys_dtypes_and_shapes_come_from_the_contract(synth_sources, synth_tokenizer, train):
  cfg = sd.synth_cfg(**MULTI_CROP)
  specs = contract.batch_specs(cfg)
  assert specs["local_crops"] == ((3, 8, 8, 1), np.float32)
  assert specs["ibot_patches"] == ((2, contract.ibot_slots(cfg)), np.int32)
  assert contract.ibot_slots(cfg) == 8  # half of the 16 patches
  for batch in _take(_iterator(synth_sources, synth_tokenizer, cfg, train=train), 3):
    assert set(batch) == set(specs)
    for key, (shape, dtype) in specs.items():
      assert (batch[key].dtype, batch[key].shape) == (dtype, (8, *shape)), key


def test_off_makes_no_extra_key(synth_sources, synth_tokenizer):
  cfg = sd.synth_cfg()
  assert not OPTIONAL & set(contract.batch_specs(cfg))
  (batch,) = _take(_iterator(synth_sources, synth_tokenizer, cfg), 1)
  assert set(batch) == set(contract.batch_specs(cfg))


def test_crops_and_hidden_patches_are_what_they_say(synth_sources, synth_tokenizer):
  cfg = sd.synth_cfg(**MULTI_CROP, normalize="per_image")
  batches = _take(_iterator(synth_sources, synth_tokenizer, cfg), 6)
  b = {k: np.concatenate([x[k] for x in batches]) for k in batches[0]}
  image, slots = b["has_image"], b["ibot_patches"]
  assert image.any() and not image.all()
  crops = b["local_crops"][image].reshape(image.sum() * 3, -1)
  np.testing.assert_allclose(crops.mean(1), 0, atol=1e-5)  # each crop normalised on its own
  np.testing.assert_allclose(crops.std(1), 1, atol=1e-3)
  assert not b["local_crops"][~image].any()
  assert (slots[~image] == contract.NO_PATCH).all()
  counts = (slots != contract.NO_PATCH).sum(-1)[image]  # [rows with an image, 2]
  masked = counts > 0
  assert 0.25 < masked.mean() < 0.75  # probability 0.5
  assert (counts[masked] >= 1).all() and (counts <= 8).all()
  for row in slots[image].reshape(-1, slots.shape[-1]):
    used = row[row != contract.NO_PATCH]
    assert (np.diff(used) > 0).all() and ((used >= 0) & (used < 16)).all()
    assert (row[len(used):] == contract.NO_PATCH).all()  # used slots first


def test_deterministic_given_the_seed_and_no_other_key_changes(synth_sources, synth_tokenizer):
  cfg = sd.synth_cfg(**MULTI_CROP)
  first = _take(_iterator(synth_sources, synth_tokenizer, cfg), 2)
  assert _same(first, _take(_iterator(synth_sources, synth_tokenizer, cfg), 2))
  other = _take(_iterator(synth_sources, synth_tokenizer, cfg, seed=1), 2)
  assert not np.array_equal(first[0]["local_crops"], other[0]["local_crops"])
  # The multi-crop draws come after all others: the rest of every row is as without them.
  plain = _take(_iterator(synth_sources, synth_tokenizer, sd.synth_cfg()), 2)
  assert _same([{k: v for k, v in x.items() if k not in OPTIONAL} for x in first], plain)


def test_resumes_from_the_iterator_state(synth_sources, synth_tokenizer):
  cfg = sd.synth_cfg(**MULTI_CROP)
  it = _iterator(synth_sources, synth_tokenizer, cfg)
  for _ in range(2):
    next(it)
  state = it.get_state()
  want = _take(it, 2)
  resumed = _iterator(synth_sources, synth_tokenizer, cfg)
  resumed.set_state(state)
  assert _same(_take(resumed, 2), want)
