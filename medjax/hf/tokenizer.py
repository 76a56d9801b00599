"""Tokenizers between medjax and Hugging Face.

`HfTokenizer`: the pipeline's Tokenizer interface (medjax/data/tokenizer.py) over the tokenizer
of a Hugging Face model directory (`--config.data.tokenizer=hf:DIR`), e.g. BERT's WordPiece:
[CLS] is BOS, [SEP] is EOS, so `encode` gives the ids `tokenizer(text, max_length=L,
truncation=True, padding="max_length")` gives. Grain workers get it pickled as its JSON
definition and rebuild it with the `tokenizers` library alone.

`save_sentencepiece`: medjax's sentencepiece model as a transformers tokenizer directory whose
ids are medjax's (the HF export's text encoder).
"""
from __future__ import annotations

import hashlib
import json

import sentencepiece as spm

from medjax import hf, paths
from medjax.contract import MASK
from medjax.data.tokenizer import Framing

# medjax role -> the transformers tokenizer attribute that fills it.
ROLES = {"pad_id": "pad_token_id", "bos_id": "cls_token_id", "eos_id": "sep_token_id",
         "mask_id": "mask_token_id", "unk_id": "unk_token_id"}


class HfTokenizer(Framing):
  """The fast (Rust) tokenizer of a Hugging Face model directory `path`."""

  def __init__(self, path: str):
    (transformers,) = hf.require("transformers")
    path = hf.local_dir(path, "data.tokenizer")
    loaded = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not getattr(loaded, "is_fast", False):
      raise ValueError(f"data.tokenizer=hf:{path}: {type(loaded).__name__} has no fast "
                       "(tokenizers) form; medjax needs one to run in its data workers")
    ids = {role: getattr(loaded, attr) for role, attr in ROLES.items()}
    missing = [ROLES[role] for role, i in ids.items() if i is None]
    if missing:
      raise ValueError(f"data.tokenizer=hf:{path}: the tokenizer defines no {missing}")
    self._setup(loaded.backend_tokenizer.to_str(), ids)

  def _setup(self, definition: str, ids: dict) -> None:
    (tokenizers,) = hf.require("tokenizers")
    self._definition, self._ids = definition, dict(ids)
    self._tok = tokenizers.Tokenizer.from_str(definition)
    self._tok.no_truncation()
    self._tok.no_padding()

  def __reduce__(self):
    return _rebuilt, (self._definition, self._ids)

  @property
  def sha256(self) -> str:
    """Fingerprint of the tokenizer's full definition; checkpoints record it."""
    return hashlib.sha256(self._definition.encode()).hexdigest()

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  pad_id = property(lambda self: self._ids["pad_id"])
  bos_id = property(lambda self: self._ids["bos_id"])
  eos_id = property(lambda self: self._ids["eos_id"])
  mask_id = property(lambda self: self._ids["mask_id"])
  unk_id = property(lambda self: self._ids["unk_id"])

  def pieces(self, text: str) -> list[int]:
    """Token ids of `text`, without [CLS]/[SEP] or truncation."""
    return self._tok.encode(text, add_special_tokens=False).ids

  def _detokenize(self, ids: list[int]) -> str:
    return self._tok.decode(ids, skip_special_tokens=True)


def _rebuilt(definition: str, ids: dict) -> HfTokenizer:
  tok = HfTokenizer.__new__(HfTokenizer)
  tok._setup(definition, ids)
  return tok


def save_hf_tokenizer(path: str, out_dir: str) -> None:
  """The tokenizer of HF directory `path` (`data.tokenizer=hf:path`) saved into `out_dir`."""
  (transformers,) = hf.require("transformers")
  transformers.AutoTokenizer.from_pretrained(path, local_files_only=True).save_pretrained(out_dir)


def save_sentencepiece(model_file, out_dir, max_len: int) -> None:
  """medjax's sentencepiece model behind transformers' SentencePieceBackend: BOS pieces EOS,
  padded with its pad piece, i.e. medjax's ids (the special pieces are read from the model)."""
  out_dir = paths.path(out_dir)
  model = paths.path(model_file).read_bytes()
  (out_dir / "tokenizer.model").write_bytes(model)
  sp = spm.SentencePieceProcessor(model_proto=model)
  piece = lambda i: sp.id_to_piece(i)
  settings = dict(
      tokenizer_class="SentencePieceBackend", special_tokens_pattern="bos_eos",
      bos_token=piece(sp.bos_id()), eos_token=piece(sp.eos_id()), unk_token=piece(sp.unk_id()),
      pad_token=piece(sp.pad_id()), mask_token=MASK, model_max_length=max_len,
      padding_side="right",
      truncation_side="right", model_input_names=["input_ids", "attention_mask"])
  paths.write_atomic(out_dir / "tokenizer_config.json", json.dumps(settings, indent=2) + "\n")
