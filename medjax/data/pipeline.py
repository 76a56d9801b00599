"""Grain input pipeline: studies (record schema v2) of one or more sources -> the batch of
`contract.batch_specs`, every key with a static shape, as numpy arrays per process.

  sources --(medjax.data.sampler)--> patient-aware two-record units, endless
          --(medjax.data.mixture)--> weighted mixture of the sources' units
          --(medjax.data.transforms)--> decode, two augmented views, tokenize, mask
          --> this process's units --> batch --> rows

Units are the atoms of sharding: global batch k is units [k * B/2, (k+1) * B/2) of the mixed
stream and unit u goes to process u % process_count, so the processes' batches together are
exactly the one-process global batch. Each unit's randomness comes from its global position,
so the rows do not depend on the number of processes or workers either.
"""
from __future__ import annotations

import logging
from pathlib import Path

import grain
import jax
import tensorflow_datasets as tfds
from absl import flags

from medjax.data import mixture, sampler
from medjax.data.tokenizer import Tokenizer
from medjax.data.transforms import Example

log = logging.getLogger(__name__)


def tokenizer_path(data_cfg) -> Path:
  """`data_cfg.tokenizer`, or by default the one data_prep trained beside the first source."""
  if data_cfg.tokenizer:
    return Path(data_cfg.tokenizer)
  first = mixture.specs(data_cfg, "train")[0]["name"]
  return Path(tfds.builder(first, data_dir=data_cfg.dir).data_dir) / "tokenizer.model"


def load_tokenizer(data_cfg) -> Tokenizer:
  path = tokenizer_path(data_cfg)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no tokenizer; train one with medjax-prepare tokenizer")
  return Tokenizer(path)


def make_iterator(data_cfg, *, batch_size: int, split: str = "train", seed: int, train: bool = True,
                  process_index: int | None = None, process_count: int | None = None):
  """Grain iterator over this process's share of `batch_size` (global) examples per step.

  `train`: weighted mixture, patient-aware order, endless, augmented, full batches only.
  Otherwise one pass over every source in stored order, no augmentation (masking and MAE noise
  still drawn from `seed`), the last batch may be short. A source's own `split` overrides
  `split`. `data_cfg.prefetch_buffer` batches are read ahead by as many threads (per worker
  process if `num_workers` > 0). `it.get_state()` is a JSON-able dict; `it.set_state()`
  resumes exactly.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  return from_sources(data_cfg, mixture.open_sources(data_cfg, split), load_tokenizer(data_cfg),
                      batch_size=batch_size, seed=seed, train=train, process_index=process_index,
                      process_count=process_count)


def from_sources(data_cfg, sources: list[mixture.Source], tokenizer: Tokenizer, *,
                 batch_size: int, seed: int, train: bool = True, process_index: int = 0,
                 process_count: int = 1):
  """`make_iterator` on already opened sources (e.g. in-memory lists of records)."""
  unit = sampler.UNIT if train else 1
  if batch_size % (unit * process_count):
    pairs = " (same-patient pairs are never split)" if train else ""
    raise ValueError(f"global batch_size {batch_size} is not divisible by {unit} x process_count "
                     f"{process_count}{pairs}")
  indexes = [s.index if s.index is not None else mixture.scan(s) for s in sources]
  example = Example(data_cfg, tokenizer, train=train)
  if train:
    ds = mixture.train_units(sources, indexes, seed=seed, pairs=float(data_cfg.patient_pairs))
  else:
    ds = mixture.eval_units(sources, indexes)
  # Randomness is keyed to the global unit index: before the per-process slice.
  ds = ds.seed(seed).random_map(example)[process_index::process_count]
  ds = ds.batch(batch_size // (unit * process_count), drop_remainder=train).map(_rows)
  buffer = int(data_cfg.prefetch_buffer)
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=buffer, prefetch_buffer_size=buffer))
  if data_cfg.num_workers > 0:
    if not flags.FLAGS.is_parsed():
      # Grain reads its absl flags when it starts workers; library callers (tests, notebooks)
      # may never parse flags, so take the defaults.
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=int(data_cfg.num_workers), per_worker_buffer_size=max(buffer, 1)))
  return iter(it_ds)


def _rows(batch: dict) -> dict:
  """[units, records per unit, ...] -> [rows, ...]."""
  return {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}
