"""Grain input pipeline: TFDS ArrayRecord studies -> paired image + text batches.

Each process yields its share of the global batch as numpy arrays:
  image      float32 [b, S, S, channels]  normalised with data_cfg.mean/std
  text_ids   int32   [b, text_len]        BOS ... EOS, padded (medjax.data.tokenizer)
  text_mask  bool    [b, text_len]
  patient    int32   [b]                  stable 31-bit hash of (source, patient_id)
Training order: seeded global shuffle, a new order each epoch, endless. Element i of the global
stream goes to process i % process_count, so the processes' batches together form the global one.
"""
from __future__ import annotations

import hashlib
import io
import logging
import math
from pathlib import Path

from absl import flags
import grain
import jax
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from medjax.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

_LOG_ASPECT = (math.log(3 / 4), math.log(4 / 3))  # random resized crop: width / height range
_JITTER = 0.1  # max brightness shift and relative contrast change, in [0, 1] pixel units


def patient_hash(source: str, patient_id: str) -> int:
  """Stable across processes and runs (unlike `hash`); the source keeps equal ids of different
  datasets apart."""
  digest = hashlib.sha256(f"{source}/{patient_id}".encode()).digest()
  return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class _Subset:
  """Random-access view of `source` restricted to `indices` (picklable for Grain workers)."""

  def __init__(self, source, indices):
    self._source, self._indices = source, np.asarray(indices, np.int64)

  def __len__(self):
    return len(self._indices)

  def __getitem__(self, i):
    return self._source[int(self._indices[i])]


def _usable(source, text_field: str) -> list[int]:
  """Indices of records with an image and non-empty text: the pairs this pipeline trains on."""
  keep = []
  for i in range(len(source)):
    record = source[i]
    if len(record["image"]) and record[text_field].strip():
      keep.append(i)
  return keep


def _crop_box(width: int, height: int, scale, rng: np.random.Generator):
  """Random box covering `scale` of the area with aspect 3/4..4/3 (log-uniform); the whole image
  if ten draws do not fit."""
  for _ in range(10):
    area = width * height * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*_LOG_ASPECT))
    w, h = math.sqrt(area * aspect), math.sqrt(area / aspect)
    if w <= width and h <= height:
      x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
      return x, y, x + w, y + h
  return 0, 0, width, height


class _Example:
  """Record -> model inputs. Train mode crops and jitters with the element's Grain RNG."""

  def __init__(self, data_cfg, tokenizer: Tokenizer):
    self.size, self.channels = int(data_cfg.image_size), int(data_cfg.channels)
    self.mean, self.std = float(data_cfg.mean), float(data_cfg.std)
    self.crop_scale = tuple(float(s) for s in data_cfg.crop_scale)
    self.text_field, self.text_len = data_cfg.text_field, int(data_cfg.text_len)
    self.tokenizer = tokenizer

  def train(self, record, rng: np.random.Generator) -> dict:
    img = self._decode(record)
    box = _crop_box(*img.size, self.crop_scale, rng)
    x = self._pixels(img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box))
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - _JITTER, 1 + _JITTER) + mean + rng.uniform(-_JITTER, _JITTER)
    return self._finish(record, np.clip(x, 0.0, 1.0))

  def eval(self, record) -> dict:
    img = self._decode(record)
    return self._finish(record, self._pixels(img.resize((self.size, self.size),
                                                        Image.Resampling.BILINEAR)))

  @staticmethod
  def _decode(record) -> Image.Image:
    img = Image.open(io.BytesIO(record["image"]))
    return img if img.mode == "L" else img.convert("L")

  @staticmethod
  def _pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img, np.float32) / 255.0

  def _finish(self, record, x: np.ndarray) -> dict:
    x = (x - self.mean) / self.std
    ids, mask = self.tokenizer.encode(record[self.text_field].decode("utf-8"), self.text_len)
    patient = patient_hash(record["source"].decode(), record["patient_id"].decode())
    return {"image": np.repeat(x[..., None], self.channels, axis=-1).astype(np.float32),
            "text_ids": ids, "text_mask": mask, "patient": np.int32(patient)}


def load_tokenizer(data_cfg) -> Tokenizer:
  """`data_cfg.tokenizer`, or by default the one data_prep trained beside the records."""
  version_dir = tfds.builder(data_cfg.name, data_dir=data_cfg.dir).data_dir
  path = Path(data_cfg.tokenizer or Path(version_dir) / "tokenizer.model")
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no tokenizer; train one with data_prep/tokenizer.py")
  return Tokenizer(path)


def make_iterator(data_cfg, *, batch_size: int, split: str = "train", seed: int, train: bool = True,
                  process_index: int | None = None, process_count: int | None = None):
  """Grain iterator over this process's share of `batch_size` (global) examples per step.

  `train`: shuffle, repeat forever, augment, drop the last partial batch. Otherwise one pass in
  stored order, no augmentation, the last batch may be short. `data_cfg.prefetch_buffer`
  batches are read ahead by as many threads (per worker process if `num_workers` > 0).
  `it.get_state()` is a JSON-able dict; `it.set_state()` resumes exactly.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if batch_size % process_count:
    raise ValueError(f"global batch_size {batch_size} is not divisible by "
                     f"process_count {process_count}")
  source = tfds.data_source(data_cfg.name, split=split, data_dir=data_cfg.dir, download=False)
  keep = _usable(source, data_cfg.text_field)
  log.info("%s/%s: %d of %d records have an image and %s text; %d left out", data_cfg.name,
           split, len(keep), len(source), data_cfg.text_field, len(source) - len(keep))
  if not keep:
    raise ValueError(f"{data_cfg.name}/{split}: no record has an image and {data_cfg.text_field}")
  example = _Example(data_cfg, load_tokenizer(data_cfg))

  ds = grain.MapDataset.source(_Subset(source, keep)).seed(seed)
  if train:
    # Augment before slicing so an element's RNG depends on its global position.
    ds = ds.shuffle().repeat().random_map(example.train)
  else:
    ds = ds.map(example.eval)
  ds = ds[process_index::process_count].batch(batch_size // process_count, drop_remainder=train)
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
