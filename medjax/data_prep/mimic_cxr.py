"""MIMIC-CXR-JPG (PhysioNet) -> schema v2 records, one per study with all its views.

Layout (2.0.0, the tables plain or .gz):
  mimic-cxr-2.0.0-metadata.csv   dicom_id, subject_id, study_id, ViewPosition, ...
  mimic-cxr-2.0.0-split.csv      dicom_id, study_id, subject_id, split (train/validate/test)
  mimic-cxr-2.0.0-chexpert.csv   subject_id, study_id, the 14 CheXpert label columns
  files/p10/p10000032/s50414267/<dicom_id>.jpg  (or .dcm, as in MIMIC-CXR)
  files/p10/p10000032/s50414267.txt             the report (from mimic-cxr-reports.zip)
The published split is used (validate -> validation); `notes` = the report's indication.

  medjax-prepare mimic_cxr --src DIR --out DIR
"""
from __future__ import annotations

import collections
import re
from pathlib import Path

from medjax.data_prep import builder, schema, tables

PREFIX = "mimic-cxr-2.0.0-"
SPLITS = {"train": "train", "validate": "validation", "test": "test"}
_ID_COLUMNS = ("dicom_id", "subject_id", "study_id")
# Ids name folders and files: one plain path component each (MIMIC's are digits, dicom_ids hex
# with dashes), so no id can lead out of the source dir.
_PLAIN_ID = re.compile(r"(?!\.+$)[\w.-]+", re.ASCII)
# A section heading: capitals at the start of a line, then a colon ("FINDINGS:", "IMPRESSION:").
_HEADING = re.compile(r"^[ \t]*([A-Z][A-Z /&()-]*[A-Z)]):", re.MULTILINE)


def sections(text: str) -> dict[str, str]:
  """Heading -> its text, whitespace collapsed (the reports wrap lines at ~80 columns)."""
  found = list(_HEADING.finditer(text))
  out = {}
  for m, nxt in zip(found, found[1:] + [None]):
    body = text[m.end():nxt.start() if nxt else len(text)]
    out[m[1].strip()] = " ".join(body.split())
  return out


def read_report(path: Path) -> tuple[str, str, str]:
  """(findings, impression, indication); raises ValueError when the report has neither a
  FINDINGS nor an IMPRESSION section (free-form reports exist; their text is not guessed at)."""
  try:
    text = path.read_bytes().decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"report is not UTF-8: {e}") from None
  s = sections(text)
  findings, impression = s.get("FINDINGS", ""), s.get("IMPRESSION", "")
  if not findings and not impression:
    raise ValueError("report has no FINDINGS or IMPRESSION section")
  return findings, impression, s.get("INDICATION") or s.get("HISTORY", "")


class MimicCxr(builder.StudyBuilder):
  """Builder; `src` is the MIMIC-CXR-JPG root (the tables and files/)."""

  SPLITS = ("train", "validation", "test")
  DESCRIPTION = "MIMIC-CXR-JPG: chest X-ray studies (all views) with their reports."
  HOMEPAGE = "https://physionet.org/content/mimic-cxr-jpg/"

  def split_rule(self) -> dict:
    return {"rule": f"the published {PREFIX}split.csv: train, validate -> validation, test"}

  def _scan(self, src: Path):
    paths = {k: tables.find(src, f"{PREFIX}{k}.csv") for k in ("metadata", "split", "chexpert")}
    meta = tables.read_csv(paths["metadata"],
                           {**{c: (c,) for c in _ID_COLUMNS}, "view": ("ViewPosition",)})
    split_table = tables.read_csv(paths["split"], {"dicom_id": ("dicom_id",), "split": ("split",)})
    label_table = tables.read_csv(paths["chexpert"], {"study_id": ("study_id",)})
    skipped = meta.skipped + split_table.skipped + label_table.skipped
    split_of = {r["dicom_id"].strip(): r["split"].strip() for _, r in split_table.rows}
    labels = {}
    for n, row in label_table.rows:
      sid = row["study_id"].strip()
      try:
        labels[sid] = tables.chexpert_labels(row)
      except ValueError as e:
        skipped.append(tables.skip_entry(paths["chexpert"].name, n, e, id=sid))
        labels[sid] = None  # the study's labels are unusable: the study is skipped below
    views = collections.defaultdict(list)  # (subject, study) -> [(row, dicom, view)]
    for n, row in meta.rows:
      missing = [c for c in _ID_COLUMNS if not row[c].strip()]
      if missing:
        skipped.append({"file": paths["metadata"].name, "row": n, "column": missing[0],
                        "reason": f"empty {missing[0]!r} column"})
        continue
      odd = [c for c in _ID_COLUMNS if not _PLAIN_ID.fullmatch(row[c].strip())]
      if odd:
        skipped.append({"file": paths["metadata"].name, "row": n, "column": odd[0],
                        "reason": f"id is not a plain file name in column {odd[0]!r}: "
                                  f"{row[odd[0]].strip()!r}"})
        continue
      ids = tuple(row[c].strip() for c in _ID_COLUMNS)
      views[ids[1:]].append((n, ids[0], schema.normalize_view(row["ViewPosition"])))
    studies = [s for key, v in views.items() if (s := self._study(
        src, paths["metadata"].name, *key, v, split_of, labels, skipped))]
    return studies, {"rows_read": meta.rows_read, "studies_read": len(views), "skipped": skipped}

  @staticmethod
  def _study(src, table, subject, study, rows, split_of, labels, skipped):
    """rows: [(metadata row, dicom_id, view)] of one study."""
    where = {"file": table, "row": rows[0][0], "id": study}
    folder = src / "files" / f"p{subject[:2]}" / f"p{subject}"
    splits = {split_of.get(dicom) for _, dicom, _ in rows}
    reason = None
    if len(splits) != 1 or None in splits or not splits <= set(SPLITS):
      reason = f"images of the study not in one known split of {PREFIX}split.csv: {splits}"
    elif labels.get(study, {}) is None:
      reason = f"unusable labels in {PREFIX}chexpert.csv"
    if reason:
      skipped.append({**where, "reason": reason})
      return None
    images = []
    for n, dicom, _ in rows:
      try:  # a symlink out of the source: hostile input, none of the study is kept
        images.append(tables.source_path(src, "dicom_id", _image(folder / f"s{study}", dicom)))
      except tables.CellError as e:
        skipped.append({**where, "row": n, "column": e.column, "reason": str(e)})
        return None
    text = ("", "", "")
    report = folder / f"s{study}.txt"
    try:
      why = tables.outside(src, report)
      if why:
        raise ValueError(why)
      text = read_report(report)
    except (OSError, ValueError) as e:  # the images still make an image-only study
      reason = "missing report file" if isinstance(e, FileNotFoundError) else str(e)
      skipped.append({"file": str(report.relative_to(src)), "id": study, "part": "report",
                      "reason": f"report dropped: {reason}"})
    return builder.Study(
        study_id=study, patient_id=subject, where=where, images=tuple(images),
        views=tuple(v for *_, v in rows), findings=text[0], impression=text[1], notes=text[2],
        labels=labels.get(study) or {"covid19": 0}, split=SPLITS[splits.pop()])


def _image(folder: Path, dicom_id: str) -> Path:
  """The JPG of MIMIC-CXR-JPG, else the DICOM of MIMIC-CXR (the JPG path names the missing file)."""
  jpg = folder / f"{dicom_id}.jpg"
  dcm = folder / f"{dicom_id}.dcm"
  return dcm if not jpg.exists() and dcm.exists() else jpg


def prepare(src_dir, out_dir, **kwargs) -> dict:
  """(Re)builds mimic_cxr under `out_dir`; returns the manifest written beside it."""
  return builder.prepare(MimicCxr, src_dir, out_dir, **kwargs)


def main(argv=None) -> dict:
  return builder.main(MimicCxr, __doc__, argv, src_help="MIMIC-CXR-JPG root dir")
