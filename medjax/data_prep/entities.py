"""Entity extraction with negation and uncertainty: a small stand-in for UMLS concept mapping.

`extract(text)` gives one code per entry of `ENTITIES`: 1 present, 0 not mentioned, -1 negated,
2 uncertain. Mentions come from a `Lexicon` (entity -> phrases); by default the CheXpert labeler's
phrase lists plus NegEx triggers, read from a directory outside the repo (`MEDJAX_LEXICON`, else
`lexicon/` of `shared_data_dir()`). A licensed vocabulary (UMLS synonyms of chosen CUIs) plugs in
by building a `Lexicon` from it: nothing below depends on where the phrases came from.
"""
from __future__ import annotations

import bisect
import dataclasses
import functools
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from medjax.contract import ENTITIES, NEGATED, NOT_MENTIONED, PRESENT, UNCERTAIN

_RANK = {PRESENT: 3, UNCERTAIN: 2, NEGATED: 1, NOT_MENTIONED: 0}  # CheXpert's mention aggregation

# Our own words. Phrases match at a word start and may run on (stems: "opaci" -> "opacities");
# a trailing "_" asks for a whole word, as in the CheXpert lists. Keys starting with "_" are
# helpers, not entities: "_other_finding" holds CheXpert's no_finding.txt (abnormalities outside
# the 14 observations, whose presence rules out "no finding").
_OWN_MENTIONS = {
    "no_finding": ("no acute cardiopulmonary", "no active disease", "no acute disease",
                   "normal chest", "lungs are clear", "clear lungs", "no abnormalit",
                   "no acute abnormalit", "no acute findings", "unremarkable chest"),
    "covid19": ("covid", "sars-cov-2", "sars cov 2", "2019-ncov", "novel coronavirus",
                "coronavirus disease 2019"),
    "ground_glass_opacity": ("ground glass", "ground-glass", "ggo_", "ggos_"),
    "viral_pneumonia": ("viral pneumonia", "viral infection", "influenza", "h1n1_"),
    "bacterial_pneumonia": ("bacterial pneumonia", "streptococc", "staphylococc", "klebsiella",
                            "legionell", "mycoplasma", "e. coli_", "escherichia coli_"),
    "interstitial": ("interstitial",),
    "ards": ("ards_", "acute respiratory distress"),
}
# Known false hits of short CheXpert stems ("tube" in tuberculosis, "plate" in platelets).
_OWN_UNMENTIONS = {"support_devices": ("tubercul", "platelet", "supportive")}
_OWN_TRIGGERS = {
    "unc_pre": ("may", "might", "could", "possible", "possibly", "probable", "probably", "likely",
                "suggest", "suggests", "suggesting", "suggestive of", "suspicious for",
                "suspected", "suspect", "suspicion of", "concerning for", "concern for",
                "worrisome for", "question of", "questionable", "cannot exclude",
                "can not exclude", "cannot rule out", "can not rule out", "rule out", "r/o",
                "evaluate for", "evaluation for", "versus", "vs", "equivocal", "indeterminate",
                "differential", "borderline", "presumed", "presumably"),
    "unc_post": ("not excluded", "cannot be excluded", "not ruled out", "cannot be ruled out",
                 "is possible", "are possible", "is suspected", "are suspected", "suspected",
                 "versus", "vs", "and/or", "is not excluded", "questioned"),
    "neg_pre": ("normal", "clear of"),
    "neg_post": ("is not", "are not", "not seen", "not identified", "not present", "not evident",
                 "not visualized", "resolved", "has resolved", "have resolved", "normal",
                 "within normal limits", "unremarkable", "absent"),
    "termination": ("with",),
}
PRE_WORDS, POST_WORDS = 10, 5  # NegEx-style scope: a few words either side, within a clause


def shared_data_dir() -> Path:
  """The real public sample (never copied into the repo): $MEDJAX_SHARED_DATA, else
  <repo>/../shared/data."""
  default = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
  return Path(os.path.normpath(os.environ.get("MEDJAX_SHARED_DATA") or default))


def default_lexicon_dir() -> Path:
  return Path(os.path.normpath(os.environ.get("MEDJAX_LEXICON") or shared_data_dir() / "lexicon"))


def _read_lines(path: Path) -> tuple[str, ...]:
  return tuple(ln.strip().lower() for ln in path.read_text().splitlines() if ln.strip())


@dataclasses.dataclass(frozen=True)
class Lexicon:
  """mentions / unmentions: entity -> phrases; triggers: kind -> phrases, kinds `pseudo`,
  `neg_pre`, `neg_post`, `unc_pre`, `unc_post`, `termination`."""
  mentions: dict[str, tuple[str, ...]]
  unmentions: dict[str, tuple[str, ...]]
  triggers: dict[str, tuple[str, ...]]

  def sha256(self) -> str:
    """Fingerprint of the phrase lists: manifests record which lexicon made the entities."""
    text = json.dumps([self.mentions, self.unmentions, self.triggers], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()

  @classmethod
  def load(cls, path: str | os.PathLike | None = None) -> Lexicon:
    """CheXpert phrase lists + NegEx `en_clinical` triggers under `path`, plus our own words."""
    root = Path(path) if path else default_lexicon_dir()
    phrases = root / "chexpert-labeler" / "phrases"
    negex = root / "negex" / "negspacy_termsets.json"
    if not (phrases / "mention").is_dir() or not negex.is_file():
      raise FileNotFoundError(f"lexicon not found under {root}: need chexpert-labeler/phrases/ "
                              f"and negex/negspacy_termsets.json (set MEDJAX_LEXICON)")

    def lists(kind: str) -> dict[str, tuple[str, ...]]:
      found = {p.stem: _read_lines(p) for p in sorted((phrases / kind).glob("*.txt"))}
      if "no_finding" in found:
        found["_other_finding"] = found.pop("no_finding")
      return found

    def merge(a: dict, b: dict) -> dict:
      return {k: tuple(dict.fromkeys(a.get(k, ()) + b.get(k, ()))) for k in {**a, **b}}

    terms = json.loads(negex.read_text())["en_clinical"]
    negex_triggers = {"pseudo": terms["pseudo_negations"], "neg_pre": terms["preceding_negations"],
                      "neg_post": terms["following_negations"], "termination": terms["termination"]}
    negex_triggers = {k: tuple(t.lower() for t in v) for k, v in negex_triggers.items()}
    return cls(merge(lists("mention"), _OWN_MENTIONS), merge(lists("unmention"), _OWN_UNMENTIONS),
               merge(negex_triggers, _OWN_TRIGGERS))


def _pattern(phrases, whole_words: bool) -> re.Pattern | None:
  alts = []
  for p in sorted(set(phrases), key=len, reverse=True):  # longest first: "pleural effusion"
    words = p.replace("_", " ").split()
    end = r"(?![a-z0-9])" if whole_words or p.endswith("_") else ""
    alts.append(r"\s+".join(map(re.escape, words)) + end)
  return re.compile(r"(?<![a-z0-9])(?:" + "|".join(alts) + ")") if alts else None


def _spans(pattern, text: str) -> list[tuple[int, int]]:
  return [m.span() for m in pattern.finditer(text)] if pattern else []


def _words(text: str) -> int:
  return len(re.findall(r"\w+", text))


class Extractor:
  """Compiled form of a Lexicon; call it on a text."""

  def __init__(self, lexicon: Lexicon):
    missing = [e for e in ENTITIES if not lexicon.mentions.get(e)]
    if missing:
      raise ValueError(f"lexicon has no phrases for entities {missing}")
    self.lexicon = lexicon
    self._mentions = {e: _pattern(p, False) for e, p in lexicon.mentions.items()}
    self._unmentions = {e: _pattern(p, False) for e, p in lexicon.unmentions.items()}
    self._triggers = {k: _pattern(p, True) for k, p in lexicon.triggers.items()}

  def __call__(self, text: str) -> np.ndarray:
    text = text.lower()
    # Sentence ends: ". " (also after list numbers), blank lines, semicolons.
    ends = [m.end() for m in re.finditer(r"[.!?]+(?=\s)|\n\s*\n|;", text)] + [len(text)]
    pseudo = _spans(self._triggers.get("pseudo"), text)
    trig = {k: [s for s in _spans(p, text) if not any(a < s[1] and s[0] < b for a, b in pseudo)]
            for k, p in self._triggers.items() if k != "pseudo"}
    status = {}
    for entity, pattern in self._mentions.items():
      blocked = _spans(self._unmentions.get(entity), text)
      for a, b in _spans(pattern, text):
        if any(x <= a and b <= y for x, y in blocked):
          continue
        i = bisect.bisect_right(ends, a)
        lo, hi = ends[i - 1] if i else 0, ends[min(i, len(ends) - 1)]
        st = self._status(text, a, b, lo, hi, trig)
        if _RANK[st] > _RANK[status.get(entity, NOT_MENTIONED)]:
          status[entity] = st
    out = np.array([status.get(e, NOT_MENTIONED) for e in ENTITIES], np.int8)
    out[ENTITIES.index("no_finding")] = self._no_finding(status)
    return out

  @staticmethod
  def _status(text, a, b, lo, hi, trig) -> int:
    """Uncertainty wins over negation (CheXpert checks it first: "cannot exclude X")."""
    stops = trig.get("termination", [])
    lo = max([e for s, e in stops if lo <= s and e <= a] + [lo])
    hi = min([s for s, e in stops if b <= s and e <= hi] + [hi])
    before = lambda kind: any(lo <= s and e <= a and _words(text[e:a]) <= PRE_WORDS  # noqa: E731
                              for s, e in trig.get(kind, []))
    after = lambda kind: any(b <= s and e <= hi and _words(text[b:s]) <= POST_WORDS  # noqa: E731
                             for s, e in trig.get(kind, []))
    if before("unc_pre") or after("unc_post"):
      return UNCERTAIN
    if before("neg_pre") or after("neg_post"):
      return NEGATED
    return PRESENT

  @staticmethod
  def _no_finding(status: dict) -> int:
    """Present when the text says something normal (a normal phrase, or a negated observation)
    and nothing abnormal is present or uncertain; support devices are not findings. Unlike
    CheXpert, silence is not "no finding": a text about anything else must not count as normal."""
    others = {e: s for e, s in status.items() if e not in ("no_finding", "support_devices")}
    if any(s in (PRESENT, UNCERTAIN) for s in others.values()):
      return NOT_MENTIONED
    normal = status.get("no_finding") == PRESENT or NEGATED in others.values()
    return PRESENT if normal else NOT_MENTIONED


@functools.lru_cache(maxsize=4)
def extractor(path: str | None = None) -> Extractor:
  """The Extractor of the lexicon under `path` (default dir if None), built once per process."""
  return Extractor(Lexicon.load(path))


def extract(text: str, lexicon_dir: str | None = None) -> np.ndarray:
  """int8 [len(ENTITIES)]: 1 present, 0 not mentioned, -1 negated, 2 uncertain."""
  return extractor(lexicon_dir)(text)
