"""Patient-disjoint splits and the leakage check every converter runs before writing.

Studies are `builder.Study` objects (`study_id`, `patient_id`); `hashes` maps a study id to the
pixel hashes of its images."""
from __future__ import annotations

import collections
import hashlib


def split_of(patient_id: str, seed: int, val_fraction: float) -> str:
  """Stable across runs and machines (unlike Python's salted `hash`)."""
  digest = hashlib.sha256(f"{seed}:{patient_id}".encode()).digest()
  return "validation" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def check_leakage(by_split: dict[str, list], hashes: dict[str, tuple]) -> None:
  """Raises ValueError naming the patients and studies found in more than one split: the same
  patient id, or an identical image (pixel hash) under any ids."""
  patient_splits, image_studies = collections.defaultdict(set), collections.defaultdict(set)
  for split, studies in by_split.items():
    for st in studies:
      patient_splits[st.patient_id].add(split)
      for h in hashes.get(st.study_id, ()):
        image_studies[h].add((split, st.study_id))
  patients = sorted(p for p, s in patient_splits.items() if len(s) > 1)
  images = sorted(sorted(sid for _, sid in v) for v in image_studies.values()
                  if len({split for split, _ in v}) > 1)
  if patients or images:
    raise ValueError(f"split leakage: patients {patients} in several splits; identical images "
                     f"in studies {images} across splits")


def merge_patients(studies: list, hashes: dict[str, tuple]) -> dict[str, str]:
  """Patient -> split group: patients who share an identical image are merged (upstream posted
  some X-rays twice under different ids), so a duplicate never straddles the splits. The
  smallest id names the group, whatever the row order."""
  parent: dict[str, str] = {}

  def root(p):
    while parent.setdefault(p, p) != p:
      p = parent[p]
    return p

  first: dict[str, str] = {}
  for st in studies:
    root(st.patient_id)
    for h in hashes[st.study_id]:
      a, b = sorted((root(st.patient_id), root(first.setdefault(h, st.patient_id))))
      parent[b] = a
  return {p: root(p) for p in parent}
