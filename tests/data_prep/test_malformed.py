"""Bad input never crashes a conversion and is never dropped silently: every malformed file, row
or document below ends as a record (repaired to the schema), a skip entry in the manifest naming
where it came from and why, or - for a broken source as a whole - a ValueError naming the file.

Each layout's cases are written into one source tree and converted once; one test per case."""
import csv
import dataclasses
import io
import zlib
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from medjax.data import pipeline
from medjax.data_prep import chexpert, covid_cxr, iu_xray, mimic_cxr, ncbi_disease, tokenizer

import layouts

BAD = "\udcff"  # stands for a byte that is not UTF-8; written as b"\xff"


@dataclasses.dataclass
class Case:
  layout: str
  make: object  # (src dir) -> the rows / members / blocks this case adds
  expect: tuple  # ("record", study_id, check) or ("skip", reason prefix[, column])


def _image(src: Path, name: str, data: bytes | None = None, **kw) -> str:
  """Writes images/<name>: `data` as is, or an image made with `kw` (mode, size, seed, fmt)."""
  path = src / "images" / name
  path.parent.mkdir(parents=True, exist_ok=True)
  if data is None:
    mode, size = kw.get("mode", "L"), kw.get("size", (48, 40))
    seed = kw.get("seed", zlib.crc32(name.encode()))  # distinct pixels: no accidental duplicates
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 4), dtype=np.uint8)
    img = {"L": lambda: Image.fromarray(pixels[..., 0], "L"),
           "RGBA": lambda: Image.fromarray(pixels, "RGBA"),
           "P": lambda: Image.fromarray(pixels[..., :3], "RGB").quantize(16),
           "I;16": lambda: Image.fromarray(pixels[..., 0].astype(np.uint16) * 16),
           "CMYK": lambda: Image.fromarray(pixels, "CMYK")}[mode]()
    buf = io.BytesIO()
    img.save(buf, format=kw.get("fmt", "PNG"))
    data = buf.getvalue()
  path.write_bytes(data)
  return name


def _row(name: str, patient: str = "", notes: str = "n", *extra) -> list:
  return [name, patient or f"p_{name}", "covid19", "PA", notes, "Y", "", "", "N", *extra]


def _jpeg(src, name, **kw):
  return _image(src, name, fmt="JPEG", **kw)


def _truncated_jpeg(src):
  full = (src / "images" / _jpeg(src, "full.jpg")).read_bytes()
  return [_row(_image(src, "t.jpg", full[:300]))]


def _chexpert_view(src, patient, labels):
  rel = f"train/{patient}/study1/view1_frontal.jpg"
  layouts.xray(src / rel, seed=int(patient[-5:]))
  return [layouts.chexpert_row(f"CheXpert-v1.0-small/{rel}", "Frontal", "AP", labels)]


def _recorded(sid, check=lambda r: True):
  return ("record", sid, check)


def _gray(r) -> np.ndarray:
  (png,) = r["images"]
  img = Image.open(io.BytesIO(png))
  assert img.mode == "L" and img.format == "PNG"
  return np.asarray(img)


CASES = {
    # ---- image files (covid layout: one image per row) ----
    "corrupt_png": Case("covid", lambda s: [_row(_image(s, "c.png", b"\x89PNG\r\n\x1a\nnope"))],
                        ("skip", "cannot decode image")),
    "truncated_jpeg": Case("covid", _truncated_jpeg, ("skip", "cannot decode image")),
    "zero_byte_file": Case("covid", lambda s: [_row(_image(s, "z.png", b""))],
                           ("skip", "cannot decode image")),
    "missing_file": Case("covid", lambda s: [_row("gone.png")], ("skip", "missing image file")),
    "unknown_extension": Case("covid", lambda s: [_row(_image(s, "scan.nii", b"\x00" * 400))],
                              ("skip", "unsupported file extension '.nii'")),
    "huge_aspect_ratio": Case("covid", lambda s: [_row(_image(s, "strip.png", size=(600, 40)))],
                              ("skip", "aspect ratio out of range")),
    "tiny_image": Case("covid", lambda s: [_row(_image(s, "icon.png", size=(8, 8)))],
                       ("skip", "image too small")),
    "dicom_without_pixels": Case("covid", lambda s: [_row(_image(s, "plan.dcm", Path(
        pydicom.data.get_testdata_file("rtplan.dcm")).read_bytes()))],
        ("skip", "cannot decode image: ValueError: ")),
    "multi_frame_dicom": Case("covid", lambda s: [_row(_image(s, "dose.dcm", Path(
        pydicom.data.get_testdata_file("rtdose.dcm")).read_bytes()))],
        ("skip", "cannot decode image: ValueError: ")),
    "rgba_png": Case("covid", lambda s: [_row(_image(s, "rgba.png", mode="RGBA"))],
                     _recorded("rgba.png", lambda r: _gray(r).shape == (40, 48))),
    "palette_png": Case("covid", lambda s: [_row(_image(s, "pal.png", mode="P"))],
                        _recorded("pal.png", lambda r: len(np.unique(_gray(r))) <= 16)),
    "16_bit_png": Case("covid", lambda s: [_row(_image(s, "deep.png", mode="I;16"))],
                       _recorded("deep.png", lambda r: _gray(r).max() == 255)),
    "cmyk_jpeg": Case("covid", lambda s: [_row(_jpeg(s, "cmyk.jpg", mode="CMYK"))],
                      _recorded("cmyk.jpg", lambda r: _gray(r).std() > 1)),
    # ---- CSV rows ----
    "non_utf8_bytes": Case("covid", lambda s: [_row(_image(s, "u.png"), "", f"caf{BAD} au lait")],
                           ("skip", "invalid UTF-8 bytes", "clinical_notes")),
    "quotes_and_newlines": Case("covid", lambda s: [_row(_image(s, "q.png"), "", 'a "b,\n c";d')],
                                _recorded("q.png", lambda r: r["notes"] == b'a "b,\n c";d')),
    "wrong_field_count": Case("covid", lambda s: [_row(_image(s, "w.png"), "", "n", "extra")],
                              ("skip", "malformed row")),
    "missing_patient_id": Case("covid", lambda s: [_row(_image(s, "m.png"), " ")],
                               ("skip", "missing patient id")),
    "duplicate_study_id": Case("covid", lambda s: [_row(_image(s, "d.png"), "pd"),
                                                   _row("d.png", "pd2")],
                               ("skip", "duplicate study id")),
    "same_xray_two_patients": Case("covid", lambda s: [
        _row(_image(s, "twin1.png", seed=5), "pA"), _row(_image(s, "twin2.jpg", seed=5, fmt="BMP"),
                                                          "pB")],
        _recorded("twin2.jpg")),  # kept, but the two patients become one split group (below)
    "empty_notes": Case("covid", lambda s: [_row(_image(s, "e.png"), "", "")],
                        _recorded("e.png", lambda r: not r["notes"] and not r["entities"].any())),
    # ---- labels ----
    "garbage_label": Case("chexpert", lambda s: _chexpert_view(s, "patient00003", {"Edema": "yes"}),
                          ("skip", "bad label value 'yes'", "Edema")),
    "nan_label": Case("chexpert", lambda s: _chexpert_view(
        s, "patient00004", {"Edema": "NaN", "Cardiomegaly": "1.0"}),  # NaN: not stated
        _recorded("patient00004/study1", lambda r: r["labels"][5] == -2 and r["labels"][2] == 1)),
    "path_outside_layout": Case("chexpert", lambda s: [layouts.chexpert_row(
        "CheXpert-v1.0-small/train/view1.jpg", "Frontal", "AP", {})],
        ("skip", "Path 'CheXpert-v1.0-small/train/view1.jpg' is not")),
    # ---- reports and documents ----
    "report_without_sections": Case("mimic", lambda s: (s / "files/p10/p10000032/s53189527.txt")
                                    .write_text("Clear lungs, normal heart."),
                                    ("skip", "report dropped: report has no FINDINGS")),
    "report_not_utf8": Case("mimic", lambda s: (s / "files/p10/p10000764/s57375967.txt")
                            .write_bytes(b"IMPRESSION: caf\xff"),
                            ("skip", "report dropped: report is not UTF-8")),
    "malformed_xml": Case("iu", lambda s: {"1.xml": b"<eCitation><uId id='CXR1'>"},
                          ("skip", "malformed XML")),
    "xml_without_uid": Case("iu", lambda s: {"2.xml": layouts.iu_report(None, "Clear.")},
                            ("skip", "no uId element")),
    "report_with_empty_text": Case("iu", lambda s: {"3.xml": layouts.iu_report(
        "CXR3", " ", "", "Cough")}, ("skip", "no findings or impression section")),
    "duplicate_report_id": Case("iu", lambda s: {"4.xml": layouts.iu_report("CXR9", "Clear."),
                                                 "5.xml": layouts.iu_report("CXR9", "Again.")},
                                ("skip", "duplicate study id")),
    "document_with_garbage_line": Case("ncbi", lambda s: ["1|t|T.\n1|a|A.\nnot pubtator"],
                                       ("skip", "malformed document: line")),
    "document_without_text": Case("ncbi", lambda s: ["2|t|\n2|a|"],
                                  ("skip", "empty text: no title and no abstract")),
}


def _convert(layout: str, root: Path) -> tuple[dict, dict, dict]:
  """Writes the layout's cases into one tree, converts it; returns the manifest, records by
  study id, and each case's identifying value (row number, file or id) for its skip entry."""
  src, where = root / "src", {}
  cases = {k: c for k, c in CASES.items() if c.layout == layout}
  if layout == "covid":
    rows = []
    for name, case in cases.items():
      new = case.make(src)
      where[name] = ("row", len(rows) + len(new))  # the case's last row
      rows += new
    text = io.StringIO(newline="")
    csv.writer(text).writerows([layouts.COVID_COLUMNS, *rows])
    (src / "metadata.csv").write_bytes(text.getvalue().encode("utf-8", "surrogateescape"))
    converter = covid_cxr
  elif layout == "chexpert":
    layouts.chexpert(src)
    extra = [r for name, c in cases.items() for r in c.make(src)]
    layouts.chexpert(src, extra_train_rows=extra)
    where = {name: ("row", 5 + i) for i, name in enumerate(cases)}
    converter = chexpert
  elif layout == "mimic":
    layouts.mimic(src)
    for name, case in cases.items():
      case.make(src)
    where = {"report_without_sections": ("id", "53189527"), "report_not_utf8": ("id", "57375967")}
    converter = mimic_cxr
  elif layout == "iu":
    members = {"0.xml": layouts.iu_report("CXR0", "Clear lungs.")}
    for name, case in cases.items():
      new = case.make(src)
      where[name] = ("file", f"ecgen-radiology/{list(new)[-1]}")
      members.update(new)
    src.mkdir(parents=True)
    src = layouts.iu_tgz(src / "reports.tgz", members)
    converter = iu_xray
  else:
    blocks = [layouts.ncbi_doc("9", "Cancer.", "An abstract.")]
    for name, case in cases.items():
      where[name] = ("row", 2 + sum(b.count("\n") + 2 for b in blocks))  # line 1 is blank
      blocks += case.make(src)
    layouts.ncbi(src, {"train": blocks, "devel": [layouts.ncbi_doc("7", "A.", "B.")],
                       "test": [layouts.ncbi_doc("8", "C.", "D.")]})
    converter = ncbi_disease
  manifest = converter.prepare(src, root / "out", val_fraction=0.5) if layout in (
      "covid", "iu") else converter.prepare(src, root / "out")
  records = {}
  for split, info in manifest["splits"].items():
    if info["num_examples"]:
      source = tfds.data_source(manifest["name"], split=split, data_dir=str(root / "out"))
      records.update({r["study_id"].decode(): r for r in source.__getitems__(range(len(source)))})
  return manifest, records, where


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  cache = {}

  def get(layout):
    if layout not in cache:
      cache[layout] = _convert(layout, tmp_path_factory.mktemp(layout))
    return cache[layout]
  return get


@pytest.mark.parametrize("name", list(CASES))
def test_case(name, converted):
  case = CASES[name]
  manifest, records, where = converted(case.layout)
  if case.expect[0] == "record":
    _, sid, check = case.expect
    assert sid in records and check(records[sid])
    return
  key, value = where[name]
  entries = [s for s in manifest["skipped"] if s.get(key) == value]
  assert entries, f"no skip entry with {key}={value!r} in {manifest['skipped']}"
  assert entries[0]["reason"].startswith(case.expect[1]), entries[0]
  if len(case.expect) > 2:
    assert entries[0]["column"] == case.expect[2]
  assert manifest["skipped_by_reason"][entries[0]["reason"].split(":")[0]] >= 1


def test_same_xray_under_two_patients_is_one_split_group(converted):
  manifest, records, _ = converted("covid")
  assert ["pA", "pB"] in manifest["merged_patients"]
  assert {"twin1.png", "twin2.jpg"} <= set(records)
  assert manifest["records"] == len(records)


def test_pipeline_reads_the_repaired_records(converted, tmp_path):
  """The records data_prep kept from odd inputs (RGBA, palette, 16-bit, CMYK, BMP, no notes)
  go through the Grain pipeline like any other."""
  import synthetic_data
  manifest, records, _ = converted("covid")
  data_dir = Path(manifest["source_path"]).parent / "out"
  tokenizer.train_tokenizer(data_dir, vocab_size=60)
  cfg = synthetic_data.synth_cfg(dir=str(data_dir), name="covid_cxr", image_size=16,
                                 patch_size=8, text_len=16, sentence_len=8)
  for split, info in manifest["splits"].items():
    it = pipeline.make_iterator(cfg, batch_size=info["num_examples"], split=split, seed=0,
                                train=False)
    try:
      batch = next(it)
    finally:
      it.close()
    assert batch["has_image"].all() and np.isfinite(batch["image"]).all()
    assert len(batch["has_image"]) == info["num_examples"]
