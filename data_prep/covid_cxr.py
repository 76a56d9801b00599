"""COVID-19 chest X-ray collection (ieee8023/covid-chestxray-dataset layout) -> TFDS ArrayRecord.

One record is one study: the X-ray re-encoded as 8-bit grayscale PNG, the clinical notes, the
patient id, a coarse diagnosis label and four outcomes. Splits are patient-disjoint; `prepare`
writes `manifest.json` (counts, shard sha256, split seed, skipped rows) beside the shards.

  python data_prep/covid_cxr.py --src ../shared/data/covid-chestxray --out DIR
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import logging
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageOps
from tensorflow_datasets.core import writer as tfds_writer
from tensorflow_datasets.proto import tf_example_pb2

SOURCE = "covid_cxr"
OUTCOMES = ("survival", "intubated", "went_icu", "needed_supplemental_O2")
SPLITS = ("train", "validation")
# (preferred, fallback) column names: the curated sample has `file`/`patient_group`/`label`,
# upstream only `filename`/`patientid`/`finding`. `label` is derived when absent.
_COLUMNS = {"file": ("file", "filename"), "patient": ("patient_group", "patientid"),
            "label": ("label", "finding"), "notes": ("clinical_notes",),
            **{k: (k,) for k in OUTCOMES}}

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Row:
  study_id: str
  patient_id: str
  path: Path
  label: str
  notes: str
  outcomes: tuple[int, ...]


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


def _outcome(value: str) -> int:
  return {"Y": 1, "N": 0}.get(value.strip().upper(), -1)


def load_gray(path: Path) -> Image.Image:
  """Decodes any PIL-readable image into 8-bit grayscale (mode L)."""
  with Image.open(path) as img:
    img.load()
    img = ImageOps.exif_transpose(img)
  if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
    # High bit depth X-rays rarely use the full range (12-bit data is common): stretch min..max.
    a = np.asarray(img, np.float64)
    lo, hi = a.min(), a.max()
    a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.round(a).astype(np.uint8), "L")
  if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
    # Transparent pixels carry arbitrary colour; an X-ray background is black.
    rgba = img.convert("RGBA")
    img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
  return img.convert("L")


def encode_png(img: Image.Image) -> bytes:
  buf = io.BytesIO()
  # zlib level 1: ~4x faster than the default 6 for ~15% more bytes; decode speed is the same.
  img.save(buf, format="PNG", compress_level=1)
  return buf.getvalue()


def _read_metadata(src: Path) -> tuple[list[dict], dict[str, str]]:
  """Rows of metadata.csv and the column found for each field of `_COLUMNS`."""
  csv_path = src / "metadata.csv"
  with open(csv_path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    present = set(reader.fieldnames or ())
    cols = {}
    for field, names in _COLUMNS.items():
      found = [n for n in names if n in present]
      if not found:
        raise ValueError(f"{csv_path}: missing required column {' or '.join(map(repr, names))}")
      cols[field] = found[0]
    return list(reader), cols


def _scan(src: Path) -> tuple[list[_Row], dict[str, str], dict]:
  """Validates every row; returns usable rows, an image hash per study and a report."""
  rows, cols = _read_metadata(src)
  kept, hashes, skipped, excluded = [], {}, [], 0
  for i, raw in enumerate(rows, start=1):  # i: data row number, the header is row 0
    if raw.get("modality", "X-ray") != "X-ray":  # upstream also holds CT volumes
      excluded += 1
      continue
    name, patient = raw[cols["file"]].strip(), raw[cols["patient"]].strip()
    path = src / raw.get("folder", "images") / name
    reason = None
    if not name or not path.is_file():
      reason = "missing image file"
    elif name in hashes:
      reason = "duplicate file name"
    elif not patient:
      reason = "missing patient id"
    else:
      try:
        img = load_gray(path)
        hashes[name] = hashlib.sha256(repr(img.size).encode() + img.tobytes()).hexdigest()
      except (OSError, ValueError, Image.DecompressionBombError) as e:
        reason = f"cannot decode image: {type(e).__name__}: {e}"
    if reason:
      skipped.append({"row": i, "file": name, "reason": reason})
      continue
    label = raw[cols["label"]]
    if cols["label"] != "label":
      label = label_from_finding(label)
    kept.append(_Row(name, patient, path, label.strip(),
                     raw[cols["notes"]].strip(), tuple(_outcome(raw[k]) for k in OUTCOMES)))
  report = {"rows_read": len(rows), "excluded_not_xray": excluded, "skipped": skipped}
  return kept, hashes, report


def _split_groups(rows: list[_Row], hashes: dict[str, str]) -> dict[str, str]:
  """Patient -> split group: patients who share an identical image are merged (upstream posted
  some X-rays twice under different ids), so a duplicate can never straddle the splits."""
  parent: dict[str, str] = {}

  def root(p):
    while parent.setdefault(p, p) != p:
      p = parent[p]
    return p

  first_patient: dict[str, str] = {}
  for r in rows:
    other = first_patient.setdefault(hashes[r.study_id], r.patient_id)
    a, b = sorted((root(r.patient_id), root(other)))
    parent[b] = a  # the smallest id is the group's name, whatever the row order
  return {p: root(p) for p in parent}


def split_of(patient_id: str, seed: int, val_fraction: float) -> str:
  """Stable across runs and machines (unlike Python's salted `hash`)."""
  digest = hashlib.sha256(f"{seed}:{patient_id}".encode()).digest()
  return "validation" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def _check_leakage(by_split: dict[str, list[_Row]], hashes: dict[str, str]) -> None:
  train, val = by_split["train"], by_split["validation"]
  patients = {r.patient_id for r in train} & {r.patient_id for r in val}
  images = {hashes[r.study_id] for r in train} & {hashes[r.study_id] for r in val}
  if patients or images:
    studies = sorted(r.study_id for r in train + val if hashes[r.study_id] in images)
    raise ValueError(f"split leakage: patients {sorted(patients)}, identical images {studies}")


class _DeterministicWriter(tfds_writer.ExampleWriter):
  """TFDS serializes tf.train.Example with protobuf's default map order, which the upb backend
  varies from process to process; re-serializing with sorted keys makes shards reproducible."""

  def write(self, path, examples):
    parse = tf_example_pb2.Example.FromString
    canonical = ((key, parse(data).SerializeToString(deterministic=True)) for key, data in examples)
    return super().write(path, canonical)


class CovidCxr(tfds.core.GeneratorBasedBuilder):
  """Builder; the source dir is passed as `DownloadConfig(manual_dir=...)`."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Point manual_dir at a checkout of github.com/ieee8023/covid-chestxray-dataset "
      "(metadata.csv + images/) or at ../shared/data/covid-chestxray.")
  # TFDS 4.9.10 finds a packaged builder's code through `importlib_resources`, a backport it
  # only installs on Python < 3.9; naming the file directly avoids that import.
  code_path = Path(__file__)

  def __init__(self, *, seed: int = 0, val_fraction: float = 0.15, **kwargs):
    self.seed, self.val_fraction = seed, val_fraction
    self.report: dict = {}  # filled while generating; `prepare` puts it in the manifest
    super().__init__(**{"file_format": "array_record", **kwargs})

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text
    return tfds.core.DatasetInfo(
        builder=self,
        description="COVID-19 chest X-ray collection: one study per record (X-ray only).",
        homepage="https://github.com/ieee8023/covid-chestxray-dataset",
        features=tfds.features.FeaturesDict({
            # PNG bytes: tfds.features.Image would need TensorFlow to encode.
            "image": tfds.features.Tensor(shape=(), dtype=np.object_),
            "findings": text(), "impression": text(), "notes": text(),
            "patient_id": text(), "study_id": text(), "source": text(), "label": text(),
            **{k: tfds.features.Tensor(shape=(), dtype=np.int8) for k in OUTCOMES},
        }))

  def _split_generators(self, dl_manager):
    rows, hashes, self.report = _scan(Path(dl_manager.manual_dir))
    group = _split_groups(rows, hashes)
    by_split = {s: [] for s in SPLITS}
    for r in rows:
      by_split[split_of(group[r.patient_id], self.seed, self.val_fraction)].append(r)
    _check_leakage(by_split, hashes)
    members = {}
    for p, g in sorted(group.items()):
      members.setdefault(g, []).append(p)
    self.report["merged_patients"] = [m for m in members.values() if len(m) > 1]
    return {s: self._generate_examples(by_split[s]) for s in SPLITS}

  def _example_writer(self):
    return _DeterministicWriter(file_format=self.info.file_format)

  def _generate_examples(self, rows):
    for r in rows:
      yield r.study_id, {
          "image": encode_png(load_gray(r.path)), "findings": "", "impression": "",
          "notes": r.notes, "patient_id": r.patient_id, "study_id": r.study_id,
          "source": SOURCE, "label": r.label, **dict(zip(OUTCOMES, r.outcomes))}


def sha256_file(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def prepare(src_dir, out_dir, *, seed: int = 0, val_fraction: float = 0.15) -> dict:
  """(Re)builds the dataset under `out_dir` and returns the manifest written beside it.

  A rebuild replaces the whole version dir, a tokenizer trained on the old data included.
  """
  src = Path(src_dir).resolve()
  builder = CovidCxr(data_dir=str(out_dir), seed=seed, val_fraction=val_fraction)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
          manual_dir=str(src), download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS))
  version_dir = Path(builder.data_dir)
  splits = {}
  for s in SPLITS:
    shards = sorted(version_dir.glob(f"{builder.name}-{s}.array_record-*"))
    splits[s] = {"num_examples": builder.info.splits[s].num_examples,
                 "shards": {p.name: sha256_file(p) for p in shards}}
  manifest = {"name": builder.name, "version": str(builder.version), "source_dir": str(src),
              "split": {"seed": seed, "val_fraction": val_fraction,
                        "rule": "validation iff sha256(f'{seed}:{patient_id}')[:8] / 2**64 < "
                                "val_fraction; patients sharing an identical image are merged "
                                "and hashed by their smallest id"},
              "splits": splits, **builder.report}
  (version_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
  log.info("%s: %s examples, %d rows skipped", version_dir,
           {s: splits[s]["num_examples"] for s in SPLITS}, len(builder.report["skipped"]))
  return manifest


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--src", required=True, help="dir with metadata.csv and images/")
  parser.add_argument("--out", required=True, help="TFDS data_dir to write into")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--val_fraction", type=float, default=0.15)
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO)
  manifest = prepare(args.src, args.out, seed=args.seed, val_fraction=args.val_fraction)
  for item in manifest["skipped"]:
    print(f"skipped row {item['row']} ({item['file']}): {item['reason']}")
  print(json.dumps({s: v["num_examples"] for s, v in manifest["splits"].items()}))


if __name__ == "__main__":
  main()
