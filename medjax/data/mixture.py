"""The sources of a run: record schema v2 datasets, checked and indexed, then ordered.

Training: each source is an endless sequence of patient-aware two-record units
(medjax.data.sampler); Grain's `MapDataset.mix` interleaves the sources' units in proportion to
their weights (a fixed, index-computed interleave: deterministic and resumable). Evaluation:
the sources one after another, each in stored order, one record per unit.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds

from medjax import contract
from medjax.contract import study_text, text_of
from medjax.data import sampler

log = logging.getLogger(__name__)

_SHOWN_IDS = 10  # skipped study ids listed in the log, per source


@dataclasses.dataclass
class Source:
  """One dataset of a run. `records`: random access to record dicts (a TFDS data source, or a
  list in tests); it must pickle for Grain worker processes."""
  name: str
  records: Any
  weight: float = 1.0


@dataclasses.dataclass
class Index:
  """What sampling needs of a source's usable records (those with an image or text)."""
  positions: np.ndarray  # their positions in `records`
  patients: list[str]
  has_image: np.ndarray


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
  return [Source(s["name"], tfds.data_source(s["name"], split=s["split"], data_dir=data_cfg.dir,
                                             download=False), s["weight"])
          for s in specs(data_cfg, split)]


def scan(source: Source) -> Index:
  """Checks every record against schema v2 (a clear error names the dataset and study) and
  indexes the usable ones. Records with neither image nor text are skipped, counted and logged
  by study id."""
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
  log.info("%s: %d records: %d with an image, %d with text, %d skipped (no image, no text)%s",
           source.name, len(source.records), int(index.has_image.sum()), texts, len(skipped),
           f", e.g. studies {skipped[:_SHOWN_IDS]}" if skipped else "")
  if not positions:
    raise ValueError(f"{source.name}: none of its {len(source.records)} records has an image or "
                     "text")
  return index


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
  """Unit of record positions -> tuple of (dataset name, record), None for an empty slot."""

  def __init__(self, source: Source, positions: np.ndarray):
    self.name, self.records, self.positions = source.name, source.records, positions

  def __call__(self, unit) -> tuple:
    return tuple(None if j == sampler.EMPTY else (self.name, self.records[int(self.positions[j])])
                 for j in unit)


def train_units(sources: list[Source], indexes: list[Index], *, seed: int,
                pairs: float) -> grain.MapDataset:
  """Endless mixture of patient-aware two-record units."""
  parts = []
  for source, index in zip(sources, indexes):
    order = sampler.PatientPairs(index.patients, index.has_image, seed=seed, pairs=pairs,
                                 name=source.name)
    log.info("%s: %d of %d units per epoch are same-patient pairs (%.0f%% asked)", source.name,
             order.pairs_per_epoch, order.units_per_epoch, 100 * pairs)
    parts.append(grain.MapDataset.source(order).map(_Fetch(source, index.positions)))
  if len(parts) == 1:
    return parts[0]
  return grain.MapDataset.mix(parts, [s.weight for s in sources])


def eval_units(sources: list[Source], indexes: list[Index]) -> grain.MapDataset:
  """One pass: every usable record once, sources in order, each in stored order."""
  parts = [grain.MapDataset.source(np.arange(len(index.positions))[:, None])
           .map(_Fetch(source, index.positions)) for source, index in zip(sources, indexes)]
  return parts[0] if len(parts) == 1 else grain.MapDataset.concatenate(parts)
