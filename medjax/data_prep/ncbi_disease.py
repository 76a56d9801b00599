"""NCBI disease corpus (PubMed abstracts, PubTator format) -> schema v2 text-only records.

One record per abstract: `notes` = title + abstract, `patient_id` = `study_id` = the PMID, no
labels; entities are extracted from the text like any other. The corpus's own train/devel/test
files become the train/validation/test splits. Its disease mention annotations are not used.

  medjax-prepare ncbi_disease --src ../shared/data/text/ncbi_disease --out DIR
"""
from __future__ import annotations

import re
from pathlib import Path

from medjax.data_prep import builder

SPLITS = {"train": "train", "devel": "validation", "test": "test"}  # corpus dir -> split
_TEXT = re.compile(r"^(\d+)\|([ta])\|(.*)$")
_ANNOTATION = re.compile(r"^(\d+)\t\d+\t\d+\t")


def corpus_files(src: Path) -> dict[str, Path]:
  """Split -> corpus file, under `src` or `src/original-data` (the upstream layout)."""
  root = src / "original-data" if (src / "original-data").is_dir() else src
  files = {}
  for folder, split in SPLITS.items():
    found = sorted((root / folder).glob("*.txt"))
    if len(found) != 1:
      raise ValueError(f"{root / folder}: expected one corpus .txt file, found {len(found)}")
    files[split] = found[0]
  return files


def parse(path: Path, split: str) -> tuple[list[builder.Study], list[dict], int]:
  """Documents are blocks separated by blank lines: a title line, an abstract line, then
  annotation lines. Returns the studies, skip entries and the number of documents seen."""
  text = path.read_bytes().decode("utf-8", errors="replace")
  studies, skipped, docs = [], [], 0
  block: list[tuple[int, str]] = []
  for n, line in enumerate(text.splitlines() + [""], start=1):
    if line.strip():
      block.append((n, line))
      continue
    if block:
      docs += 1
      try:
        studies.append(_document(path, block, split))
      except ValueError as e:
        skipped.append({"file": path.name, "row": block[0][0], "reason": str(e)})
      block = []
  return studies, skipped, docs


def _document(path: Path, block: list[tuple[int, str]], split: str) -> builder.Study:
  parts, pmids = {}, set()
  for n, line in block:
    m = _TEXT.match(line)
    if m:
      if m[2] in parts:
        raise ValueError(f"malformed document: second '|{m[2]}|' line at line {n}")
      parts[m[2]] = m[3].strip()
      pmids.add(m[1])
    elif _ANNOTATION.match(line):
      pmids.add(line.split("\t", 1)[0])
    else:
      raise ValueError(f"malformed document: line {n} is neither text nor annotation")
  if len(pmids) != 1:
    raise ValueError(f"malformed document: several PMIDs {sorted(pmids)}")
  if "\ufffd" in "".join(parts.values()):
    raise ValueError("invalid UTF-8 bytes in the text")
  if not parts.get("t") and not parts.get("a"):
    raise ValueError("empty text: no title and no abstract")
  pmid = pmids.pop()
  notes = "\n".join(p for p in (parts.get("t"), parts.get("a")) if p)
  return builder.Study(study_id=pmid, patient_id=pmid,
                       where={"file": path.name, "row": block[0][0]}, notes=notes, split=split)


class NcbiDisease(builder.StudyBuilder):
  """Builder; `src` is the corpus dir (train/, devel/, test/, optionally under original-data/)."""

  SPLITS = ("train", "validation", "test")
  DESCRIPTION = "NCBI disease corpus: PubMed titles and abstracts, text only."
  HOMEPAGE = "https://www.ncbi.nlm.nih.gov/CBBresearch/Dogan/DISEASE/"

  def split_rule(self) -> dict:
    return {"rule": "the corpus's own files: train -> train, devel -> validation, test -> test"}

  def _scan(self, src: Path):
    studies, skipped, docs = [], [], 0
    for split, path in corpus_files(src).items():
      s, k, n = parse(path, split)
      studies, skipped, docs = studies + s, skipped + k, docs + n
    return studies, {"rows_read": docs, "skipped": skipped}


def prepare(src_dir, out_dir, **kwargs) -> dict:
  """(Re)builds ncbi_disease under `out_dir`; returns the manifest written beside it."""
  return builder.prepare(NcbiDisease, src_dir, out_dir, **kwargs)


def main(argv=None) -> dict:
  return builder.main(NcbiDisease, __doc__, argv, src_help="NCBI disease corpus dir")
