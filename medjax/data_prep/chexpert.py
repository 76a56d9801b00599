"""CheXpert v1.0 (or its -small copy) -> schema v2 records, one per study with all its views.

Layout: `train.csv` and `valid.csv` (columns Path, Sex, Age, Frontal/Lateral, AP/PA and the 14
observations, values 1.0 / 0.0 / -1.0 / blank) beside `train/patientXXXXX/studyN/viewN_*.jpg`.
The CSV paths start with the dataset's own folder name (CheXpert-v1.0-small/train/...), which is
`src` itself. Image-only records: CheXpert publishes no report text. train.csv -> train,
valid.csv -> validation (the published, patient-disjoint split).

  medjax-prepare chexpert --src CheXpert-v1.0-small --out DIR
"""
from __future__ import annotations

import collections
from pathlib import Path, PurePosixPath

from medjax.data_prep import builder, schema, tables

CSVS = {"train.csv": "train", "valid.csv": "validation"}
_COLUMNS = {"path": ("Path",), "frontal": ("Frontal/Lateral",), "ap_pa": ("AP/PA",)}


def view_of(frontal_lateral: str, ap_pa: str) -> str:
  if frontal_lateral.strip().lower() == "lateral":
    return "LATERAL"
  view = schema.normalize_view(ap_pa)
  return view if view in ("AP", "PA") else ""  # a frontal view is never LATERAL


def _ids(path: str) -> tuple[str, str, PurePosixPath]:
  """(patient, study, path under the dataset dir) from e.g.
  CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg."""
  parts = PurePosixPath(path.strip()).parts
  if len(parts) != 5 or not parts[2].startswith("patient") or not parts[3].startswith("study"):
    raise ValueError(f"Path {path.strip()!r} is not <dataset>/<split>/patientN/studyN/<file>")
  return parts[2], f"{parts[2]}/{parts[3]}", PurePosixPath(*parts[1:])


class ChexpertCxr(builder.StudyBuilder):
  """Builder; `src` is the CheXpert-v1.0(-small) dir. TFDS already has a `chexpert` builder,
  hence the name chexpert_cxr."""

  DESCRIPTION = "CheXpert v1.0: chest X-ray studies (all views) with 14 observation labels."
  HOMEPAGE = "https://stanfordmlgroup.github.io/competitions/chexpert/"

  def split_rule(self) -> dict:
    return {"rule": "the published split: train.csv -> train, valid.csv -> validation"}

  def _scan(self, src: Path):
    studies, skipped, rows_read = [], [], 0
    for name, split in CSVS.items():
      table = tables.read_csv(src / name, _COLUMNS)
      skipped += table.skipped
      rows_read += table.rows_read
      views = collections.defaultdict(list)  # (patient, study) -> [(row, image, view, labels)]
      for n, row in table.rows:
        try:
          patient, study, rel = _ids(row["Path"])
          image = tables.source_path(src, "Path", *rel.parts)
          labels = tables.chexpert_labels(row)
        except ValueError as e:
          skipped.append(tables.skip_entry(name, n, e))
          continue
        views[patient, study].append(
            (n, image, view_of(row["Frontal/Lateral"], row["AP/PA"]), labels))
      for (patient, study), rows in views.items():
        where = {"file": name, "row": rows[0][0], "id": study}
        if any(r[3] != rows[0][3] for r in rows):  # labels come from the one report per study
          skipped.append({**where, "reason": "conflicting labels between the study's rows"})
          continue
        studies.append(builder.Study(
            study_id=study, patient_id=patient, where=where, images=tuple(r[1] for r in rows),
            views=tuple(r[2] for r in rows), labels=rows[0][3], split=split))
    return studies, {"rows_read": rows_read, "skipped": skipped}


def prepare(src_dir, out_dir, **kwargs) -> dict:
  """(Re)builds chexpert_cxr under `out_dir`; returns the manifest written beside it."""
  return builder.prepare(ChexpertCxr, src_dir, out_dir, **kwargs)


def main(argv=None) -> dict:
  return builder.main(ChexpertCxr, __doc__, argv,
                      src_help="CheXpert-v1.0(-small) dir with train.csv")
