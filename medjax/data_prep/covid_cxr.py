"""COVID-19 chest X-ray collection (ieee8023/covid-chestxray-dataset layout) -> schema v2 records.

One record per X-ray (the collection has no study ids): one image and its view, the clinical
notes, the patient (group) id, labels from the diagnosis, entities from the notes and the four
outcomes. Splits are patient-disjoint; `prepare` writes `manifest.json` beside the shards.

  medjax-prepare covid_cxr --src ../shared/data/covid-chestxray --out DIR
"""
from __future__ import annotations

from pathlib import Path

from medjax import contract
from medjax.data_prep import builder, schema, tables

OUTCOMES = contract.OUTCOMES
# (preferred, fallback) column names: the curated sample has `file`/`patient_group`/`label`,
# upstream only `filename`/`patientid`/`finding`. `label` is derived when absent.
_COLUMNS = {"file": ("file", "filename"), "patient": ("patient_group", "patientid"),
            "label": ("label", "finding"), "notes": ("clinical_notes",),
            **{k: (k,) for k in OUTCOMES}}
# The three diagnoses are exclusive: each label value fixes all three. "unlabeled" states none.
_DIAGNOSES = ("covid19", "other_pneumonia", "no_finding")


def label_from_finding(finding: str) -> str:
  """Coarse diagnosis from upstream `finding`, the same mapping the curated sample used."""
  finding = finding.strip().lower()
  if "covid-19" in finding:
    return "covid19"
  if finding == "no finding":
    return "no_finding"
  if finding in ("", "todo", "unknown"):
    return "unlabeled"
  return "other_pneumonia"


def labels_of(label: str) -> dict[str, int]:
  if label not in _DIAGNOSES:
    return {}
  return {d: int(d == label) for d in _DIAGNOSES}


class CovidCxr(builder.StudyBuilder):
  """Builder; see `prepare`."""

  DESCRIPTION = "COVID-19 chest X-ray collection: one X-ray per record."
  HOMEPAGE = "https://github.com/ieee8023/covid-chestxray-dataset"

  def _scan(self, src: Path):
    table = tables.read_csv(src / "metadata.csv", _COLUMNS)
    cols, skipped = table.columns, table.skipped
    studies, excluded = [], 0
    for i, raw in table.rows:
      if raw.get("modality", "X-ray") != "X-ray":  # upstream also holds CT volumes
        excluded += 1
        continue
      name = raw[cols["file"]].strip()
      label = raw[cols["label"]].strip()
      if cols["label"] != "label":
        label = label_from_finding(label)
      if not name:
        skipped.append({"row": i, "reason": f"empty {cols['file']!r} column"})
        continue
      folder = raw.get("folder") or "images"
      try:
        tables.source_path(src, "folder", folder)
        image = tables.source_path(src, cols["file"], folder, name)
      except tables.CellError as e:
        skipped.append({"row": i, "column": e.column, "reason": str(e)})
        continue
      studies.append(builder.Study(
          study_id=name, patient_id=raw[cols["patient"]].strip(), where={"row": i},
          images=(image,),
          views=(schema.normalize_view(raw.get("view", "")),), notes=raw[cols["notes"]],
          labels=labels_of(label),
          outcomes={k: schema.outcome_code(raw[k]) for k in OUTCOMES}))
    return studies, {"rows_read": table.rows_read, "excluded_not_xray": excluded,
                     "skipped": skipped}


def prepare(src_dir, out_dir, *, seed: int = 0, val_fraction: float = 0.15, **kwargs) -> dict:
  """(Re)builds the dataset under `out_dir` from a dir with metadata.csv and images/; returns
  the manifest written beside it."""
  return builder.prepare(CovidCxr, src_dir, out_dir, seed=seed, val_fraction=val_fraction,
                         **kwargs)


def main(argv=None) -> dict:
  return builder.main(CovidCxr, __doc__, argv, src_help="dir with metadata.csv and images/")
