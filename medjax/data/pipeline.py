"""Grain input pipeline: studies (record schema v2) of one or more sources -> the batch of
`contract.batch_specs`, every key with a static shape, as numpy arrays per process.

  sources --(medjax.data.sampler)--> patient-aware two-record units, endless
          --(medjax.data.mixture)--> weighted mixture of the sources' units
          --(medjax.data.transforms)--> decode, two augmented views, tokenize, mask
          --> this process's units --> batch --> rows

Units are the atoms of sharding: global batch k is units [k * U, (k+1) * U) of the mixed stream
(U = B/2), and process p of P reads the contiguous block [p * U/P, (p+1) * U/P) of it, so the
processes' rows, in process order, are exactly the one-process global batch, row for row. Each
unit's randomness comes from its global position, so the rows do not depend on the number of
processes or workers either. (An eval pass is shared out unit by unit: u goes to u % P.)
"""
from __future__ import annotations

import logging

import grain
import jax
import tensorflow_datasets as tfds
from absl import flags

from medjax import paths
from medjax.configs.resolve import HF_PREFIX
from medjax.data import mixture, sampler
from medjax.data.tokenizer import Tokenizer
from medjax.data.transforms import Example

log = logging.getLogger(__name__)


def tokenizer_path(data_cfg):
  """`data_cfg.tokenizer`, or by default the one data_prep trained beside the first source."""
  if data_cfg.tokenizer:
    return data_cfg.tokenizer if data_cfg.tokenizer.startswith(HF_PREFIX) else paths.path(
        data_cfg.tokenizer)
  first = mixture.specs(data_cfg, "train")[0]["name"]
  return paths.path(tfds.builder(first, data_dir=data_cfg.dir).data_dir) / "tokenizer.model"


def load_tokenizer(data_cfg) -> Tokenizer:
  if data_cfg.tokenizer.startswith(HF_PREFIX):  # a Hugging Face model's own (medjax/hf)
    from medjax.hf.tokenizer import HfTokenizer
    return HfTokenizer(data_cfg.tokenizer[len(HF_PREFIX):])
  path = tokenizer_path(data_cfg)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no tokenizer; train one with medjax-prepare tokenizer")
  return Tokenizer(path)


def make_iterator(data_cfg, *, batch_size: int, split: str = "train", seed: int, train: bool = True,
                  start_batch: int = 0, process_index: int | None = None,
                  process_count: int | None = None):
  """Grain iterator over this process's share of `batch_size` (global) examples per step.

  `train`: weighted mixture, patient-aware order, endless, augmented, full batches only.
  Otherwise one pass over every source in stored order, no augmentation (masking and MAE noise
  still drawn from `seed`), the last batch may be short. A source's own `split` overrides
  `split`. `data_cfg.prefetch_buffer` batches are read ahead by as many threads (per worker
  process if `num_workers` > 0).

  `start_batch`: the global batch to start from. Batch k is a pure function of (data, seed, k),
  whatever the number of processes or workers, so a resumed run starts at the batch after its
  checkpoint's step and sees exactly the batches an uninterrupted run would, also on another
  process count: no iterator state is needed.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  return from_sources(data_cfg, mixture.open_sources(data_cfg, split), load_tokenizer(data_cfg),
                      batch_size=batch_size, seed=seed, train=train, start_batch=start_batch,
                      process_index=process_index, process_count=process_count)


def from_sources(data_cfg, sources: list[mixture.Source], tokenizer: Tokenizer, *,
                 batch_size: int, seed: int, train: bool = True, start_batch: int = 0,
                 process_index: int = 0, process_count: int = 1):
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
  # Randomness is keyed to the global unit index: before the per-process share.
  ds = ds.seed(seed).random_map(example)
  per_process = batch_size // (unit * process_count)
  if train:
    ds = grain.MapDataset.range(len(ds)).map(_ProcessShare(ds, process_index, process_count,
                                                             per_process))
  else:
    ds = ds[process_index::process_count]
  ds = ds.batch(per_process, drop_remainder=train)[start_batch:]
  ds = ds.map(_rows)
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


class _ProcessShare:
  """Local unit i of process p -> global unit: block p of every global batch of units."""

  def __init__(self, units, process: int, count: int, per_process: int):
    self.units, self.process, self.count, self.per_process = units, process, count, per_process

  def __call__(self, i: int):
    batch, offset = divmod(int(i), self.per_process)
    return self.units[(batch * self.count + self.process) * self.per_process + offset]


def _rows(batch: dict) -> dict:
  """[units, records per unit, ...] -> [rows, ...]."""
  return {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}
