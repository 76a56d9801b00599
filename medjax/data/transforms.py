"""One study record (schema v2) -> one row of every batch key of `contract.batch_specs`.

Rows of unpaired studies (image-only, text-only) and empty slots get zeros wherever they lack
the input, so every key exists with a static shape. Train mode draws all randomness (view
choice, crops, blur, gamma, jitter, masking, hidden sentence, MAE noise, local crops, iBOT's
hidden patches) from the element's Grain RNG. The multi-crop draws come after those of every
row of a unit, so turning them on changes no other key.
"""
from __future__ import annotations

import hashlib
import io
import logging
import math

import numpy as np
from PIL import Image, ImageFilter

from medjax import contract
from medjax.configs.resolve import NORMALIZE
from medjax.contract import study_text, text_of
from medjax.data import tasks
from medjax.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

_LOG_ASPECT = (math.log(3 / 4), math.log(4 / 3))  # random resized crop: width / height range
_MIN_STD = 1e-3
# Max brightness shift and relative contrast change, in [0, 1] pixel units. With
# data.normalize="per_image" only its clipping survives.
_JITTER = 0.1
_UNDECODABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
# Labels whose entity has another name: a non-COVID pneumonia is a pneumonia.
_LABEL_ENTITY = {"other_pneumonia": "pneumonia"}


def patient_hash(source: str, patient_id: str) -> int:
  """Stable across processes and runs (unlike `hash`); the source keeps equal ids of different
  datasets apart."""
  digest = hashlib.sha256(f"{source}/{patient_id}".encode()).digest()
  return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


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


def _crop(img: Image.Image, box, size: int) -> Image.Image:
  """`box` of `img` (None: all of it), `size` pixels square."""
  return img.resize((size, size), Image.Resampling.BILINEAR, box=box)


def _unit_floats(img: Image.Image) -> np.ndarray:
  return np.asarray(img, np.float32) / 255.0


def pick_view(views, rng: np.random.Generator | None) -> int:
  """Index of the image a multi-view study contributes. Frontal views (PA, AP) are preferred:
  reports describe them and downstream tasks use them; laterals are used only when a study has
  nothing else. Among the candidates, train mode draws one with the element RNG (over epochs
  every frontal view is seen), eval takes the first (stored order)."""
  names = [v.decode() if isinstance(v, bytes) else str(v) for v in views]
  candidates = ([i for i, v in enumerate(names) if v.upper() in contract.FRONTAL_VIEWS]
                or list(range(len(names))))
  return candidates[int(rng.integers(len(candidates)))] if rng is not None else candidates[0]


class Example:
  """Turns units (tuples of (dataset name, record) or None) into stacked rows."""

  def __init__(self, data_cfg, tokenizer: Tokenizer, *, train: bool):
    self.size, self.channels = int(data_cfg.image_size), int(data_cfg.channels)
    self.mean, self.std = float(data_cfg.mean), float(data_cfg.std)
    if data_cfg.normalize not in NORMALIZE:
      raise ValueError(f"data.normalize={data_cfg.normalize!r}: expected one of {NORMALIZE}")
    self.per_image = data_cfg.normalize == "per_image"
    self.crop_scale = tuple(float(s) for s in data_cfg.crop_scale)
    self.log_gamma = tuple(math.log(float(g)) for g in data_cfg.gamma)
    self.blur_probability = float(data_cfg.blur_probability)
    self.blur_sigma = tuple(float(s) for s in data_cfg.blur_sigma)
    self.local_crops, self.local_size = int(data_cfg.local_crops), int(data_cfg.local_crop_size)
    self.local_scale = tuple(float(s) for s in data_cfg.local_crop_scale)
    self.ibot_probability = float(data_cfg.ibot_mask_probability)
    self.ibot_ratio = tuple(float(r) for r in data_cfg.ibot_mask_ratio)
    self.ibot_slots = contract.ibot_slots(data_cfg) if self.ibot_probability > 0 else 0
    self.text_len, self.sentence_len = int(data_cfg.text_len), int(data_cfg.sentence_len)
    self.mlm_rate = float(data_cfg.mlm_rate)
    self.num_patches = (self.size // int(data_cfg.patch_size)) ** 2
    self._empty = contract.empty_row(data_cfg)
    self.tokenizer, self.train = tokenizer, train
    self.special = (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.mask_id,
                    tokenizer.unk_id)
    # A positive label adds its entity to the image's vector; labels without one, and the
    # withheld ones (downstream targets pretraining must not see), add nothing.
    withheld = set(data_cfg.withheld_labels)
    unknown = withheld - set(contract.LABELS)
    if unknown:
      raise ValueError(f"data.withheld_labels: {sorted(unknown)} are not labels "
                       f"{list(contract.LABELS)}")
    names = [None if n in withheld else _LABEL_ENTITY.get(n, n) for n in contract.LABELS]
    self.label_to_entity = np.array([contract.ENTITIES.index(n) if n in contract.ENTITIES
                                     else -1 for n in names], np.int64)
    self.undecodable = 0  # images met at read time that PIL cannot open (this process)

  def __call__(self, unit, rng: np.random.Generator) -> dict:
    rows = [self._row(item, rng) if item is not None else (self.empty(), None) for item in unit]
    for out, img in rows:  # after every row's other draws: they stay as without multi-crop
      self._multi_crop(img, rng, out)
    return {k: np.stack([r[k] for r, _ in rows]) for k in rows[0][0]}

  def empty(self) -> dict:
    """`contract.empty_row`: no image, no text, a patient that matches nobody."""
    return {k: v.copy() for k, v in self._empty.items()}

  def row(self, item, rng: np.random.Generator) -> dict:
    """One study -> one row of every batch key."""
    out, img = self._row(item, rng)
    self._multi_crop(img, rng, out)
    return out

  def _row(self, item, rng: np.random.Generator):
    """(the row without its multi-crop keys filled, the decoded image or None)."""
    dataset, record = item
    out = self.empty()
    out["patient"] = np.int32(patient_hash(text_of(record, "source"),
                                           text_of(record, "patient_id")))
    img = self._decode(dataset, record, rng)
    if img is not None:
      out["image"], out["image2"] = self._views(img, rng)
      out["has_image"] = np.bool_(True)
      out["mae_noise"] = tasks.patch_noise(rng, self.num_patches)
      out["image_entities"][self.label_to_entity[
          (np.asarray(record["labels"]) == 1) & (self.label_to_entity >= 0)]] = 1.0
    text = study_text(record)
    if text:
      out["has_text"] = np.bool_(True)
      out.update(self._text(text, rng))
      present = (np.asarray(record["entities"]) == 1).astype(np.float32)
      out["text_entities"] = present
      if out["has_image"]:
        out["image_entities"] = np.maximum(out["image_entities"], present)
      findings, impression = text_of(record, "findings"), text_of(record, "impression")
      out["has_findings_impression"] = np.bool_(bool(findings and impression))
      for key, section in (("findings", findings), ("impression", impression)):
        if section:
          out[f"{key}_ids"], out[f"{key}_mask"] = self.tokenizer.encode(section, self.text_len)
    return out, img

  def _multi_crop(self, img: Image.Image | None, rng: np.random.Generator, out: dict) -> None:
    """DINO's local crops and iBOT's hidden patches of the two global crops, when configured
    and the row has an image. Eval mode: each local crop is the whole image at its size."""
    if img is None:
      return
    for k in range(self.local_crops):
      out["local_crops"][k] = (self._augment(img, rng, self.local_scale, self.local_size)
                               if self.train else
                               self._model_input(self._resize(img, None, self.local_size)))
    if self.ibot_slots:
      for crop in range(2):
        out["ibot_patches"][crop] = tasks.hidden_patches(
            rng, self.num_patches, self.ibot_slots, self.ibot_probability, self.ibot_ratio)

  def _views(self, img: Image.Image, rng: np.random.Generator):
    """(image, image2): two augmented views (train), or the whole image twice (eval)."""
    if not self.train:
      x = self._model_input(self._resize(img, None))
      return x, x.copy()
    return (self._augment(img, rng, self.crop_scale, self.size),
            self._augment(img, rng, self.crop_scale, self.size))

  def _decode(self, dataset: str, record, rng: np.random.Generator) -> Image.Image | None:
    """The picked view as a grayscale PIL image, or None without a (decodable) image. An
    undecodable image is a counted, logged skip of the image: the row keeps its text, if any."""
    images = record["images"]
    if not len(images):
      return None
    i = pick_view(record["views"], rng if self.train else None)
    try:
      img = Image.open(io.BytesIO(images[i]))
      img = img if img.mode == "L" else img.convert("L")
      img.load()
    except _UNDECODABLE as e:
      self.undecodable += 1
      log.warning("%s: study %s: image %d cannot be decoded (%s); row used without an image "
                  "(%d undecodable so far in this process)", dataset,
                  text_of(record, "study_id"), i, type(e).__name__, self.undecodable)
      return None
    return img

  def _augment(self, img: Image.Image, rng: np.random.Generator, scale, size: int) -> np.ndarray:
    """A random resized crop covering `scale` of the area, `size` pixels square, blurred and
    gamma-mapped when configured, jittered. Off, they draw nothing: the other draws stay."""
    crop = _crop(img, _crop_box(*img.size, scale, rng), size)
    if self.blur_probability and rng.uniform() < self.blur_probability:
      crop = crop.filter(ImageFilter.GaussianBlur(rng.uniform(*self.blur_sigma)))
    x = _unit_floats(crop)
    if self.log_gamma != (0.0, 0.0):
      x = x ** math.exp(rng.uniform(*self.log_gamma))
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - _JITTER, 1 + _JITTER) + mean + rng.uniform(-_JITTER, _JITTER)
    return self._model_input(np.clip(x, 0.0, 1.0))

  def _resize(self, img: Image.Image, box, size: int | None = None) -> np.ndarray:
    """`box` of `img` (None: all of it) at `size` (default: the model's), as [0, 1] floats."""
    return _unit_floats(_crop(img, box, size or self.size))

  def _model_input(self, x: np.ndarray) -> np.ndarray:
    if self.per_image:  # a blank image has no contrast to scale: floor the std
      x = ((x - x.mean()) / max(float(x.std()), _MIN_STD)).astype(np.float32)
    else:
      x = ((x - self.mean) / self.std).astype(np.float32)
    return np.repeat(x[..., None], self.channels, axis=-1)

  def _text(self, text: str, rng: np.random.Generator) -> dict:
    tok, t = self.tokenizer, self.text_len
    ids, mask = tok.encode(text, t)
    mlm_ids, mlm_targets, mlm_weights = tasks.mask_tokens(
        ids, mask, rng, vocab_size=tok.vocab_size, mask_id=tok.mask_id, special_ids=self.special,
        rate=self.mlm_rate)
    out = dict(text_ids=ids, text_mask=mask, mlm_ids=mlm_ids, mlm_targets=mlm_targets,
               mlm_weights=mlm_weights)
    hidden = tasks.hide_sentence(text, rng, limit=self._sentences_within(text))
    if hidden is not None:
      out["sr_context_ids"], out["sr_context_mask"] = tok.encode(hidden[0], t)
      out["sr_target_ids"], out["sr_target_mask"] = tok.encode(hidden[1], self.sentence_len)
      out["has_sentence"] = np.bool_(True)
    return out

  def _sentences_within(self, text: str) -> int:
    """How many leading sentences start inside the token window (BOS ... EOS): hiding a later
    one would truncate its [MASK] away."""
    start, count = 1, 0
    for sentence in tasks.split_sentences(text):
      if start >= self.text_len - 1:
        break
      count += 1
      start += len(self.tokenizer.pieces(sentence))
    return count
