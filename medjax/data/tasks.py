"""Self-supervision targets made on the host: MLM masking, sentence hiding, MAE patch noise,
iBOT's hidden patches.

Pure numpy and string functions; every random choice comes from the caller's
`np.random.Generator`, so an element's targets depend only on its Grain RNG.
"""
from __future__ import annotations

import re

import numpy as np

from medjax.contract import MASK, NO_PATCH

# A '.' after one of these is not a sentence end ("Dr. Lee", "e.g. effusion", "vs. atelectasis").
_ABBREVIATIONS = frozenset(
    "dr mr mrs ms prof st e.g eg i.e ie vs cf fig figs approx al ca ref resp".split())
# Candidate sentence ends: terminal punctuation (plus closing quotes/brackets) then whitespace.
# Decimals ("1.5 cm") have no whitespace after the point, so they never match.
_END = re.compile(r"[.!?]+[\"')\]]*\s+")
# A blank line always ends a sentence: report sections are joined with one.
_PARAGRAPH = re.compile(r"\n\s*\n")
# A line starting with a list marker ("2. ", "3) ") starts a new sentence.
_LIST_LINE = re.compile(r"\n(?=\s*\d{1,2}[.)]\s)")
_LIST_MARKER = re.compile(r"\d{1,2}")


def mask_tokens(ids: np.ndarray, mask: np.ndarray, rng: np.random.Generator, *, vocab_size: int,
                mask_id: int, special_ids, rate: float = 0.15):
  """BERT masking of one sequence -> (mlm_ids int32, mlm_targets int32, mlm_weights float32).

  round(rate * n) of the n real non-special tokens are chosen (at least one when n > 0); of
  those 80% become `mask_id`, 10% a random non-special token, 10% stay. Targets hold the
  original ids at chosen positions and 0 elsewhere; weights are 1 at chosen positions.
  """
  ids = np.asarray(ids, np.int32)
  special = np.unique(np.asarray(list(special_ids), np.int64))
  candidates = np.flatnonzero(np.asarray(mask, bool) & ~np.isin(ids, special))
  out, targets = ids.copy(), np.zeros_like(ids)
  weights = np.zeros(ids.shape, np.float32)
  if not len(candidates):
    return out, targets, weights
  k = min(len(candidates), max(1, round(rate * len(candidates))))
  chosen = np.sort(rng.choice(candidates, size=k, replace=False))
  targets[chosen], weights[chosen] = ids[chosen], 1.0
  action = rng.random(k)
  out[chosen[action < 0.8]] = mask_id
  randomised = chosen[(action >= 0.8) & (action < 0.9)]
  out[randomised] = _non_special(rng.integers(0, vocab_size - len(special), len(randomised)),
                                 special)
  return out, targets, weights


def _non_special(draws: np.ndarray, special: np.ndarray) -> np.ndarray:
  """Maps draws from [0, vocab - len(special)) onto the non-special ids, order kept: each
  special id at or below a value shifts it up by one (specials sorted ascending)."""
  draws = draws.astype(np.int64)
  for s in special:
    draws = draws + (draws >= s)
  return draws.astype(np.int32)


def split_sentences(text: str) -> list[str]:
  """Sentences of clinical text, stripped, empty ones dropped.

  Ends at '.', '!' or '?' followed by whitespace, at blank lines and before list-marker lines;
  not after abbreviations ('Dr.', 'e.g.'), initials, a numbered-list marker ('1. No effusion.'
  is one sentence) or before a lowercase word (usually an abbreviation we do not know).
  """
  sentences = []
  for block in _PARAGRAPH.split(text):
    for line in _LIST_LINE.split(block):
      sentences.extend(_split_block(line))
  return sentences


def _split_block(text: str) -> list[str]:
  out, start = [], 0
  for end in _END.finditer(text):
    before = text[start:end.start()]
    word = before.rsplit(None, 1)[-1].lstrip("([\"'") if before.strip() else ""
    after = text[end.end():end.end() + 1]
    if end.group().startswith(".") and _keeps_going(word, before, after):
      continue
    out.append(text[start:end.end()])
    start = end.end()
  out.append(text[start:])
  return [s.strip() for s in out if s.strip()]


def _keeps_going(word: str, before: str, after: str) -> bool:
  """Whether the '.' after `word` (last word of `before`) is not a sentence end."""
  if word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
    return True
  if _LIST_MARKER.fullmatch(word):  # '1.' opening a sentence or following 'IMPRESSION:'
    head = before[:before.rstrip().rfind(word)].rstrip()
    return not head or head.endswith(":")
  return after.islower()


def hide_sentence(text: str, rng: np.random.Generator, *, limit: int | None = None):
  """(text with one sentence replaced by a single [MASK], that sentence), or None when the text
  has fewer than two sentences. Only the first `limit` sentences may be hidden (callers pass
  how many survive truncation, so the [MASK] is never cut off)."""
  sentences = split_sentences(text)
  if len(sentences) < 2:
    return None
  i = int(rng.integers(min(len(sentences), limit or len(sentences))))
  return " ".join(sentences[:i] + [MASK] + sentences[i + 1:]), sentences[i]


def patch_noise(rng: np.random.Generator, num_patches: int) -> np.ndarray:
  """Uniform [0, 1) noise per patch; MAE keeps the patches with the lowest values."""
  return rng.random(num_patches, dtype=np.float32)


def hidden_patches(rng: np.random.Generator, num_patches: int, slots: int, probability: float,
                   ratio) -> np.ndarray:
  """iBOT's hidden patches of one global crop: int32 [slots] raster indices, ascending, then
  NO_PATCH. With `probability` the crop is masked at all; then a share drawn uniformly from
  `ratio` (low, high) of its patches, at least one and at most `slots`, chosen uniformly
  (DINOv2 hides rectangular blocks of patches instead: a difference of this implementation)."""
  out = np.full(slots, NO_PATCH, np.int32)
  if rng.random() >= probability:
    return out
  count = min(slots, max(1, int(rng.uniform(*ratio) * num_patches)))
  out[:count] = np.sort(rng.choice(num_patches, count, replace=False))
  return out
