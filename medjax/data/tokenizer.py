"""Sentencepiece tokenizer with fixed-length BOS ... EOS encoding for the text towers.

`Framing` is that encoding on top of any tokenizer's pieces: medjax's sentencepiece `Tokenizer`
here, a Hugging Face one in medjax/hf/tokenizer.py (`data.tokenizer=hf:DIR`).
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import sentencepiece as spm

from medjax import paths
from medjax.contract import MASK


class Framing:
  """`encode` and `decode` of the text towers' fixed-length ids. Subclasses provide pieces(),
  _detokenize() and the special ids (pad_id, bos_id, eos_id, mask_id, unk_id)."""

  def encode(self, text: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """BOS + pieces + EOS, cut to `max_len` (EOS stays last) and padded: (ids int32, mask bool)."""
    if max_len < 2:
      raise ValueError(f"max_len must leave room for BOS and EOS, got {max_len}")
    pieces = self.pieces(text)[:max_len - 2]
    ids = np.full(max_len, self.pad_id, np.int32)
    ids[:len(pieces) + 2] = [self.bos_id, *pieces, self.eos_id]
    return ids, np.arange(max_len) < len(pieces) + 2

  def decode(self, ids) -> str:
    """Text up to the first EOS, without BOS and padding."""
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    return self._detokenize([i for i in ids if i not in (self.pad_id, self.bos_id)])


class Tokenizer(Framing):
  """Wraps a sentencepiece model (bytes or a file path) trained by medjax-prepare tokenizer."""

  def __init__(self, model: bytes | str | os.PathLike):
    is_bytes = isinstance(model, (bytes, bytearray))
    self._proto = bytes(model) if is_bytes else paths.path(model).read_bytes()
    self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
    self._mask_id = self._sp.piece_to_id(MASK)
    if min(self.pad_id, self.bos_id, self.eos_id) < 0 or self._mask_id == self._sp.unk_id():
      raise ValueError("tokenizer model needs pad, bos, eos and a [MASK] piece")

  def __reduce__(self):
    # The sentencepiece processor cannot be pickled; Grain workers rebuild it from the model bytes.
    return Tokenizer, (self._proto,)

  @property
  def sha256(self) -> str:
    """Fingerprint of the model file; checkpoints record it so a resume cannot switch it."""
    return hashlib.sha256(self._proto).hexdigest()

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  @property
  def pad_id(self) -> int:
    return self._sp.pad_id()

  @property
  def bos_id(self) -> int:
    return self._sp.bos_id()

  @property
  def eos_id(self) -> int:
    return self._sp.eos_id()

  @property
  def unk_id(self) -> int:
    return self._sp.unk_id()

  @property
  def mask_id(self) -> int:
    return self._mask_id

  def pieces(self, text: str) -> list[int]:
    """Piece ids of `text`, without BOS/EOS or truncation."""
    return self._sp.encode(text, out_type=int)

  def _detokenize(self, ids: list[int]) -> str:
    return self._sp.decode(ids)
