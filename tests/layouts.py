"""Small source trees in the published layouts of MIMIC-CXR-JPG, CheXpert, the covid collection,
the NCBI disease corpus and the IU reports archive, written from PIL images and CSV text."""
from __future__ import annotations

import csv
import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CHEXPERT_COLUMNS = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices"]
# MIMIC-CXR-JPG's chexpert.csv orders the same columns alphabetically.
MIMIC_LABEL_COLUMNS = sorted(CHEXPERT_COLUMNS)
MIMIC_METADATA_COLUMNS = [
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
    "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]
COVID_COLUMNS = ["file", "patient_group", "label", "view", "clinical_notes", "survival",
                 "intubated", "went_icu", "needed_supplemental_O2"]


def xray(path: Path, seed: int, size=(64, 80), fmt: str | None = None) -> Path:
  """A distinct grayscale image per seed (identical pixels would be duplicates)."""
  pixels = np.random.default_rng(seed).integers(0, 256, size[::-1], dtype=np.uint8)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(pixels, "L").save(path, format=fmt)
  return path


def write_csv(path: Path, header: list[str], rows: list[list], gz: bool = False) -> Path:
  buf = io.StringIO(newline="")
  csv.writer(buf).writerows([header, *rows])
  data = buf.getvalue().encode()
  path.parent.mkdir(parents=True, exist_ok=True)
  if gz:
    path = path.with_name(path.name + ".gz")
    data = gzip.compress(data, mtime=0)
  path.write_bytes(data)
  return path


MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough  // eval for pneumonia

 COMPARISON:  None.

 FINDINGS:

 Small left pleural effusion. No pneumothorax.  The heart size is
 mildly enlarged.

 IMPRESSION:

 Small left pleural effusion.
"""


def mimic(root: Path, gz: bool = False) -> Path:
  """Four studies of three subjects: two views + report (train), one view (train), one DICOM
  view with an impression-only report (validate), one view without report or labels (test)."""
  studies = [  # subject, study, [(dicom, view)], split, report, labels
      ("10000032", "50414267", [("d1", "PA"), ("d2", "LATERAL")], "train", MIMIC_REPORT,
       {"Pleural Effusion": "1.0", "Cardiomegaly": "-1.0", "Pneumothorax": "0.0"}),
      ("10000032", "53189527", [("d3", "AP")], "train", MIMIC_REPORT, {"No Finding": "1.0"}),
      ("10000764", "57375967", [("d4", "PA")], "validate", " IMPRESSION: No acute process.\n",
       {"Pneumonia": "1.0"}),
      ("10000898", "50771383", [("d5", "AP AXIAL")], "test", None, None),
  ]
  meta, split, labels = [], [], []
  for n, (subject, study, views, part, report, lab) in enumerate(studies):
    folder = root / "files" / f"p{subject[:2]}" / f"p{subject}"
    for k, (dicom, view) in enumerate(views):
      if dicom == "d4":  # MIMIC-CXR's DICOM form of a view
        import pydicom.data
        (folder / f"s{study}").mkdir(parents=True, exist_ok=True)
        (folder / f"s{study}" / f"{dicom}.dcm").write_bytes(
            Path(pydicom.data.get_testdata_file("CT_small.dcm")).read_bytes())
      else:
        xray(folder / f"s{study}" / f"{dicom}.jpg", seed=10 * n + k, fmt="JPEG")
      meta.append([dicom, subject, study, "CHEST (PA AND LAT)", view, 80, 64, 21800506, 213014.5,
                   "CHEST (PA AND LAT)", "postero-anterior", "Erect"])
      split.append([dicom, study, subject, part])
    if report is not None:
      (folder / f"s{study}.txt").write_text(report)
    if lab is not None:
      labels.append([subject, study, *(lab.get(c, "") for c in MIMIC_LABEL_COLUMNS)])
  write_csv(root / "mimic-cxr-2.0.0-metadata.csv", MIMIC_METADATA_COLUMNS, meta, gz)
  write_csv(root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id", "split"],
            split, gz)
  write_csv(root / "mimic-cxr-2.0.0-chexpert.csv", ["subject_id", "study_id",
                                                    *MIMIC_LABEL_COLUMNS], labels, gz)
  return root


def chexpert_row(path: str, frontal: str, ap_pa: str, labels: dict, sex="Female", age=68):
  return [path, sex, age, frontal, ap_pa, *(labels.get(c, "") for c in CHEXPERT_COLUMNS)]


def chexpert(root: Path, extra_train_rows=()) -> Path:
  """CheXpert-v1.0-small: a one-view study, a two-view study and a second study of that
  patient in train.csv; one study in valid.csv."""
  prefix = "CheXpert-v1.0-small"
  train = [("train/patient00001/study1/view1_frontal.jpg", "Frontal", "AP",
            {"Cardiomegaly": "1.0", "Edema": "-1.0"}),
           ("train/patient00002/study1/view1_frontal.jpg", "Frontal", "PA", {"No Finding": "1.0"}),
           ("train/patient00002/study1/view2_lateral.jpg", "Lateral", "", {"No Finding": "1.0"}),
           ("train/patient00002/study2/view1_frontal.jpg", "Frontal", "AP",
            {"Pneumonia": "1.0", "Support Devices": "0.0"})]
  valid = [("valid/patient64541/study1/view1_frontal.jpg", "Frontal", "PA",
            {"Lung Opacity": "1.0", "Pleural Effusion": "0.0"})]
  for seed, (path, *_) in enumerate(train + valid):
    xray(root / path, seed=100 + seed, fmt="JPEG")
  header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_COLUMNS]
  write_csv(root / "train.csv", header,
            [chexpert_row(f"{prefix}/{p}", *r) for p, *r in train] + list(extra_train_rows))
  write_csv(root / "valid.csv", header, [chexpert_row(f"{prefix}/{p}", *r) for p, *r in valid])
  return root


def ncbi(root: Path, docs: dict[str, list[str]]) -> Path:
  """PubTator files: split folder -> document blocks (each a str of lines)."""
  names = {"train": "NCBItrainset_corpus.txt", "devel": "NCBIdevelopset_corpus.txt",
           "test": "NCBItestset_corpus.txt"}
  for folder, blocks in docs.items():
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / folder / names[folder]).write_text("\n" + "\n\n".join(blocks) + "\n\n")
  return root


def ncbi_doc(pmid: str, title: str, abstract: str) -> str:
  return (f"{pmid}|t|{title}\n{pmid}|a|{abstract}\n"
          f"{pmid}\t0\t{len(title.split()[0])}\t{title.split()[0]}\tDiseaseClass\tD000001")


def iu_report(uid: str | None, findings="", impression="", indication="",
              mesh=("normal",)) -> bytes:
  sections = "".join(f'<AbstractText Label="{k}">{v}</AbstractText>' for k, v in
                     (("INDICATION", indication), ("FINDINGS", findings),
                      ("IMPRESSION", impression)))
  uid_tag = f'<uId id="{uid}"/>' if uid else ""
  terms = "".join(f"<major>{t}</major>" for t in mesh)
  return (f'<?xml version="1.0" encoding="utf-8"?><eCitation><meta type="rr"/>{uid_tag}'
          f"<MedlineCitation><Article><Abstract>{sections}</Abstract></Article></MedlineCitation>"
          f"<MeSH>{terms}</MeSH></eCitation>").encode()


def iu_tgz(path: Path, members: dict[str, bytes]) -> Path:
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w:gz") as t:
    for name, data in members.items():
      info = tarfile.TarInfo(f"ecgen-radiology/{name}")
      info.size = len(data)
      t.addfile(info, io.BytesIO(data))
  path.write_bytes(buf.getvalue())
  return path
