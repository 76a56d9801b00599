"""Patient-aware order of one source: an endless, random-access sequence of two-record units.

The patient-level contrastive loss needs 2+ images of one patient in the same global batch.
Training batches are therefore made of units of two records that always travel together (the
pipeline never splits a unit between batches or processes). Each epoch, a fraction `pairs` of
the units are same-patient pairs of image records; the rest hold the remaining records in random
order. Every record is in exactly one unit per epoch; an odd count leaves one slot empty (-1).

Pair units are spread evenly (units u with round((u+1)p) > round(up), p the pair fraction of
the epoch), so any run of m consecutive units, across epoch ends too, holds floor(mp) or
ceil(mp) pairs: each batch, also after mixing with other sources, gets its share instead of a
binomially varying count.
"""
from __future__ import annotations

import collections
import sys
import zlib

import numpy as np

UNIT = 2  # records per unit
EMPTY = -1  # an empty slot, filled with an all-zero example


class PatientPairs:
  """Unit i -> int64[UNIT] of record positions (0..len(patients)-1, or EMPTY). Picklable, pure:
  unit i depends only on (seed, name, i), which makes Grain's iterator state enough to resume."""

  def __init__(self, patients, has_image, *, seed: int, pairs: float, name: str = ""):
    if not 0 <= pairs <= 1:
      raise ValueError(f"patient_pairs must be in [0, 1], got {pairs}")
    if not len(patients):
      raise ValueError(f"{name}: no records to sample")
    self.size = len(patients)
    self.units_per_epoch = -(-self.size // UNIT)
    groups = collections.defaultdict(list)
    for i, (patient, image) in enumerate(zip(patients, has_image)):
      if image:
        groups[patient].append(i)
    # Sorted by first record: the order must not depend on hash seeds or dict history.
    self._groups = [np.array(g) for g in sorted(groups.values(), key=lambda g: g[0]) if len(g) > 1]
    available = sum(len(g) // UNIT for g in self._groups)
    self.pairs_per_epoch = min(available, round(pairs * self.units_per_epoch))
    self._seed = (seed, zlib.crc32(name.encode()))  # sources of one mixture draw apart
    self._cache: dict[int, np.ndarray] = {}

  def __len__(self) -> int:
    return sys.maxsize  # endless: epochs follow each other, each in a new order

  def __getitem__(self, i: int) -> np.ndarray:
    epoch, u = divmod(int(i), self.units_per_epoch)
    units = self._cache.get(epoch)
    if units is None:
      units = self.epoch(epoch)
      self._cache[epoch] = units
      self._cache.pop(epoch - 2, None)  # readers straddle at most two epochs
    return units[u]

  def epoch(self, epoch: int) -> np.ndarray:
    """int64[units_per_epoch, UNIT]: the units of `epoch`, in order."""
    rng = np.random.default_rng([*self._seed, epoch])
    candidates = [rng.permutation(g)[:len(g) // UNIT * UNIT].reshape(-1, UNIT)
                  for g in self._groups]
    candidates = np.concatenate(candidates) if candidates else np.zeros((0, UNIT), np.int64)
    pairs = candidates[rng.permutation(len(candidates))[:self.pairs_per_epoch]]
    rest = np.setdiff1d(np.arange(self.size), pairs.reshape(-1))
    rest = rng.permutation(np.append(rest, [EMPTY] * (-len(rest) % UNIT))).reshape(-1, UNIT)
    u, p, n = np.arange(self.units_per_epoch), self.pairs_per_epoch, self.units_per_epoch
    is_pair = ((u + 1) * p + n // 2) // n > (u * p + n // 2) // n  # rounding keeps epoch ends even
    units = np.empty((self.units_per_epoch, UNIT), np.int64)
    units[is_pair], units[~is_pair] = pairs, rest
    return units
