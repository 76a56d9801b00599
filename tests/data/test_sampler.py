"""Patient-aware unit order: coverage per epoch, pair fraction and spread, determinism."""
import collections
import pickle

import numpy as np
import pytest

from medjax.data import sampler


def _patients(n_patients=40, seed=0):
  """Records of patients with 1-5 studies each; every third record has no image."""
  counts = np.random.default_rng(seed).integers(1, 6, n_patients)
  patients = [f"p{p}" for p, c in enumerate(counts) for _ in range(c)]
  has_image = [i % 3 != 2 for i in range(len(patients))]
  return patients, has_image


def _pairs_in(units, patients, has_image) -> int:
  return sum(1 for a, b in units if a >= 0 and b >= 0 and has_image[a] and has_image[b]
             and patients[a] == patients[b])


@pytest.mark.parametrize("n_patients", [40, 41])
def test_every_record_once_per_epoch(n_patients):
  patients, has_image = _patients(n_patients)
  s = sampler.PatientPairs(patients, has_image, seed=0, pairs=0.5)
  for epoch in range(3):
    units = np.stack([s[epoch * s.units_per_epoch + u] for u in range(s.units_per_epoch)])
    flat = units.reshape(-1)
    assert sorted(flat[flat >= 0].tolist()) == list(range(len(patients)))
    assert (flat == sampler.EMPTY).sum() == len(patients) % 2


def test_pair_fraction_and_even_spread():
  patients, has_image = _patients()
  s = sampler.PatientPairs(patients, has_image, seed=0, pairs=0.25)
  assert s.pairs_per_epoch == round(0.25 * s.units_per_epoch)
  epochs = [s.epoch(e) for e in range(3)]
  assert all(_pairs_in(units, patients, has_image) >= s.pairs_per_epoch for units in epochs)
  # any 8 consecutive units, across epoch ends too, hold floor(8p) pairs or more
  same = np.array([_pairs_in([unit], patients, has_image) for unit in np.concatenate(epochs)])
  windows = np.convolve(same, np.ones(8, int), "valid")
  assert windows.min() >= np.floor(8 * s.pairs_per_epoch / s.units_per_epoch) > 0


def test_asking_for_more_pairs_than_exist_uses_all_of_them():
  patients, has_image = _patients()
  s = sampler.PatientPairs(patients, has_image, seed=0, pairs=1.0)
  possible = sum(n // 2 for n in collections.Counter(
      p for p, image in zip(patients, has_image) if image).values())
  assert s.pairs_per_epoch == possible < s.units_per_epoch
  assert sampler.PatientPairs(patients, has_image, seed=0, pairs=0.0).pairs_per_epoch == 0


def test_deterministic_new_order_each_epoch_and_picklable():
  patients, has_image = _patients()
  a = sampler.PatientPairs(patients, has_image, seed=3, pairs=0.5)
  b = pickle.loads(pickle.dumps(sampler.PatientPairs(patients, has_image, seed=3, pairs=0.5)))
  np.testing.assert_array_equal(a.epoch(1), b.epoch(1))
  np.testing.assert_array_equal(a[a.units_per_epoch + 5], b.epoch(1)[5])
  assert not np.array_equal(a.epoch(0), a.epoch(1))
  other = sampler.PatientPairs(patients, has_image, seed=4, pairs=0.5)
  assert not np.array_equal(a.epoch(0), other.epoch(0))
  named = sampler.PatientPairs(patients, has_image, seed=3, pairs=0.5, name="other_source")
  assert not np.array_equal(a.epoch(0), named.epoch(0))


def test_bad_arguments():
  with pytest.raises(ValueError, match="patient_pairs"):
    sampler.PatientPairs(["a"], [True], seed=0, pairs=1.5)
  with pytest.raises(ValueError, match="no records"):
    sampler.PatientPairs([], [], seed=0, pairs=0.5, name="empty_source")
