"""The sources of a run: record schema v2 datasets, checked and indexed, then ordered.

Opening a prepared dataset verifies its shards against the manifest (medjax.data.shards) and
reads the sampling index data_prep wrote beside them (medjax.contract.sampling_index), so a run
starts without reading its records; each record is checked against the schema when it is read.

Training: each source is an endless sequence of patient-aware two-record units
(medjax.data.sampler); Grain's `MapDataset.mix` interleaves the sources' units in proportion to
their weights (a fixed, index-computed interleave: deterministic and resumable). Evaluation:
the sources one after another, each in stored order, one record per unit.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds

from medjax import contract, paths
from medjax.contract import study_text, text_of
from medjax.data import sampler, shards

log = logging.getLogger(__name__)

_SHOWN_IDS = 10  # skipped study ids listed in the log, per source


@dataclasses.dataclass
class Index:
  """What sampling needs of a source's usable records (those with an image or text)."""
  positions: np.ndarray  # int64[M]: their positions in `records`
  patients: list[str]  # M patient ids
  has_image: np.ndarray  # bool[M]


@dataclasses.dataclass
class Source:
  """One dataset of a run. `records`: random access to record dicts (a TFDS data source, or a
  list in tests); it must pickle for Grain worker processes. `index`: its sampling index, None
  to build one by reading every record (`scan`)."""
  name: str
  records: Any
  weight: float = 1.0
  index: Index | None = None


def specs(data_cfg, split: str) -> list[dict]:
  """`data_cfg.sources` (name, weight, optional split), or the single `data_cfg.name`."""
  out = []
  for spec in data_cfg.get("sources") or ({"name": data_cfg.name},):
    spec = dict(spec)
    unknown = set(spec) - {"name", "weight", "split"}
    if unknown or "name" not in spec:
      raise ValueError(f"data.sources entry {spec}: needs 'name', may have 'weight' and 'split', "
                       f"got unknown keys {sorted(unknown)}")
    weight = float(spec.get("weight", 1.0))
    if not weight > 0:
      raise ValueError(f"data.sources: {spec['name']} has weight {weight}; weights must be > 0")
    out.append(dict(name=spec["name"], weight=weight, split=spec.get("split", split)))
  return out


def open_sources(data_cfg, split: str) -> list[Source]:
  return [open_source(data_cfg.dir, s["name"], s["split"], s["weight"])
          for s in specs(data_cfg, split)]


def open_source(data_dir: str, name: str, split: str, weight: float = 1.0) -> Source:
  """A prepared dataset's split, its shards verified, with its sampling index. A dataset
  prepared before medjax wrote indexes is indexed by reading every record (slow at scale:
  logged, with the fix)."""
  builder = tfds.builder(name, data_dir=data_dir)
  version_dir = paths.path(builder.data_dir)
  try:
    manifest = json.loads((version_dir / "manifest.json").read_text())
  except (OSError, ValueError) as e:
    raise ValueError(f"{name}: no readable manifest.json in {version_dir} ({e}); re-run its "
                     "data_prep converter") from None
  splits = manifest.get("splits", {})
  info = splits.get(split)
  if not info or not info.get("shards"):
    counts = {k: v.get("num_examples") for k, v in splits.items()}
    raise ValueError(f"{name}: no {split!r} records in {version_dir} (its splits: {counts})")
  shards.verify(name, version_dir, info["shards"], info.get("shard_bytes", {}))
  records = builder.as_data_source(split)
  if "index" not in info:
    log.warning("%s: prepared without a sampling index; reading all %d %s records to build one. "
                "Re-run its data_prep converter to start without reading them.", name,
                len(records), split)
    return Source(name, records, weight)
  return Source(name, records, weight, _read_index(version_dir, info["index"], name, len(records)))


def _read_index(version_dir, entry: dict, name: str, n: int) -> Index:
  """The index file of manifest `entry` ({"file", "sha256"}) of a split of `n` records."""
  where = f"{name}: {entry['file']}"
  data = (version_dir / entry["file"]).read_bytes()
  if hashlib.sha256(data).hexdigest() != entry["sha256"]:
    raise ValueError(f"{where} does not match its manifest sha256: corrupted or swapped; re-run "
                     "its data_prep converter")
  patients, has_image, has_text, unusable = contract.read_index(json.loads(data), where)
  if len(patients) != n:
    raise ValueError(f"{where} indexes {len(patients)} records, the split has {n}")
  usable = has_image | has_text
  index = Index(np.flatnonzero(usable), [p for p, u in zip(patients, usable) if u],
                has_image[usable])
  _log_index(name, n, index, int(has_text.sum()), unusable)
  return index


def scan(source: Source) -> Index:
  """Indexes the usable records of a source without an index by reading every one (in-memory
  sources; datasets prepared before indexes), checking each against schema v2."""
  positions, patients, has_image, skipped, texts = [], [], [], [], 0
  for i in range(len(source.records)):
    record = source.records[i]
    _check(source.name, i, record)
    image, text = len(record["images"]) > 0, bool(study_text(record))
    if not (image or text):
      skipped.append(text_of(record, "study_id"))
      continue
    positions.append(i)
    texts += text
    patients.append(text_of(record, "patient_id"))
    has_image.append(image)
  index = Index(np.array(positions, np.int64), patients, np.array(has_image, bool))
  _log_index(source.name, len(source.records), index, texts, skipped)
  return index


def _log_index(name: str, n: int, index: Index, texts: int, skipped: list[str]) -> None:
  """Records with neither image nor text are skipped, counted and logged by study id."""
  log.info("%s: %d records: %d with an image, %d with text, %d skipped (no image, no text)%s",
           name, n, int(index.has_image.sum()), texts, len(skipped),
           f", e.g. studies {skipped[:_SHOWN_IDS]}" if skipped else "")
  if not len(index.positions):
    raise ValueError(f"{name}: none of its {n} records has an image or text")


def _check(name: str, i: int, record) -> None:
  missing = set(contract.RECORD_FIELDS) - set(record)
  if missing:
    raise ValueError(f"{name}: record {i} lacks {sorted(missing)}: record schema "
                     f"v{contract.SCHEMA_VERSION} expected; re-run its data_prep converter")
  study = f"{name}: study {text_of(record, 'study_id')}"
  if len(record["views"]) != len(record["images"]):
    raise ValueError(f"{study}: {len(record['images'])} images but {len(record['views'])} views")
  for field, size in (("labels", len(contract.LABELS)), ("entities", len(contract.ENTITIES))):
    if np.shape(record[field]) != (size,):
      raise ValueError(f"{study}: {field} has shape {np.shape(record[field])}, expected "
                       f"({size},) (medjax.contract changed? re-run the converter)")


class _Fetch:
  """Unit of index entries -> tuple of (dataset name, record), None for an empty slot. Each
  record is checked as it is read: schema v2, and the patient its index entry names."""

  def __init__(self, source: Source, index: Index):
    self.name, self.records, self.index = source.name, source.records, index

  def __call__(self, unit) -> tuple:
    return tuple(None if j == sampler.EMPTY else (self.name, self._read(int(j))) for j in unit)

  def _read(self, j: int):
    position = int(self.index.positions[j])
    record = self.records[position]
    _check(self.name, position, record)
    if text_of(record, "patient_id") != self.index.patients[j]:
      raise ValueError(f"{self.name}: record {position} (study {text_of(record, 'study_id')}) "
                       "is not the one its sampling index describes: the index belongs to other "
                       "shards; re-run its data_prep converter")
    return record


def train_units(sources: list[Source], indexes: list[Index], *, seed: int,
                pairs: float) -> grain.MapDataset:
  """Endless mixture of patient-aware two-record units."""
  parts = []
  for source, index in zip(sources, indexes):
    order = sampler.PatientPairs(index.patients, index.has_image, seed=seed, pairs=pairs,
                                 name=source.name)
    log.info("%s: %d of %d units per epoch are same-patient pairs (%.0f%% asked)", source.name,
             order.pairs_per_epoch, order.units_per_epoch, 100 * pairs)
    parts.append(grain.MapDataset.source(order).map(_Fetch(source, index)))
  if len(parts) == 1:
    return parts[0]
  return grain.MapDataset.mix(parts, [s.weight for s in sources])


def eval_units(sources: list[Source], indexes: list[Index]) -> grain.MapDataset:
  """One pass: every usable record once, sources in order, each in stored order."""
  parts = [grain.MapDataset.source(np.arange(len(index.positions))[:, None])
           .map(_Fetch(source, index)) for source, index in zip(sources, indexes)]
  return parts[0] if len(parts) == 1 else grain.MapDataset.concatenate(parts)
