"""Conversions under faults and hostile input, on copies of real rows and X-rays of the covid
sample: a failed re-conversion leaves the dataset byte for byte; paths out of the source, an
over-long cell and images over the decoding limits are counted skips naming row, column or file;
a bad flag is an error naming it (exit code 2) with nothing written."""
import csv
import errno
import fcntl
import hashlib
import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medjax.data import pipeline
from medjax.data_prep import (
  chexpert,
  covid_cxr,
  images as imaging,
  iu_xray,
  mimic_cxr,
  tables,
  tokenizer,
)

import layouts
import synthetic_data

VERSION = Path("covid_cxr") / "2.0.0"


@pytest.fixture(scope="module")
def real(shared_data):
  """(header, the first 10 rows, images dir) of the real covid metadata.csv."""
  folder = shared_data / "covid-chestxray"
  with open(folder / "metadata.csv", newline="") as f:
    reader = csv.DictReader(f)
    return reader.fieldnames + ["folder"], [next(reader) for _ in range(10)], folder / "images"


def _source(root: Path, real, n: int = 8, extra=()) -> Path:
  """A covid-chestxray copy: `n` real rows and their X-rays, then `extra` rows (dicts)."""
  header, rows, images = real
  (root / "images").mkdir(parents=True, exist_ok=True)
  for row in rows[:n]:
    shutil.copy(images / row["file"], root / "images" / row["file"])
  with open(root / "metadata.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, header, restval="")
    writer.writeheader()
    writer.writerows([*rows[:n], *({**rows[0], **e} for e in extra)])
  return root


def _tree(root: Path) -> dict[str, str | None]:
  """Every path under `root` (hidden ones too) -> sha256 of its bytes (None for a dir)."""
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file()
          else None for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def prepared(real, tmp_path_factory):
  """A converted real copy with a tokenizer trained on it: (src, out)."""
  root = tmp_path_factory.mktemp("prepared")
  src = _source(root / "src", real)
  covid_cxr.prepare(src, root / "out")
  tokenizer.train_tokenizer(root / "out", vocab_size=60)
  return src, root / "out"


@pytest.fixture
def out(prepared, tmp_path):
  shutil.copytree(prepared[1], tmp_path / "out")
  return tmp_path / "out"


# ---- A failed re-conversion leaves the dataset as it was -----------------------------------------
def _no_metadata(root, real):
  (root / "images").mkdir(parents=True)
  return root


def _no_usable_study(root, real):
  return _source(root, real, n=0, extra=[{"file": "gone.png"}])


@pytest.mark.parametrize("make, error", [
    (_no_metadata, r"metadata\.csv"),  # --src of another layout
    (_no_usable_study, "no usable study"),
])
def test_failed_reconversion_keeps_the_dataset(out, tmp_path, real, make, error):
  before = _tree(out)
  with pytest.raises((ValueError, FileNotFoundError), match=error):
    covid_cxr.prepare(make(tmp_path / "wrong", real), out)
  assert _tree(out) == before


def test_disk_full_while_writing_keeps_the_dataset(out, prepared, monkeypatch):
  before = _tree(out)

  def full(img):
    raise OSError(errno.ENOSPC, "No space left on device")
  monkeypatch.setattr(imaging, "encode_png", full)  # fails while the shards are written
  with pytest.raises(OSError, match="No space left"):
    covid_cxr.prepare(prepared[0], out)
  assert _tree(out) == before


def test_conversion_of_the_same_dataset_at_the_same_time_is_refused(out, prepared):
  before = _tree(out)
  with open(out / ".covid_cxr.lock", "a") as held:
    fcntl.flock(held, fcntl.LOCK_EX)
    with pytest.raises(RuntimeError, match="another conversion of covid_cxr is running"):
      covid_cxr.prepare(prepared[0], out)
  assert _tree(out) == before


def test_rebuild_of_the_same_data_reproduces_the_dir_and_keeps_the_tokenizer(out, prepared):
  before = _tree(out)
  covid_cxr.prepare(prepared[0], out)
  assert _tree(out) == before  # shards, indexes, manifest (with its tokenizer entry), tokenizer


def test_rebuild_after_a_killed_swap_restores_then_replaces(out, prepared):
  before = _tree(out)
  (out / VERSION).rename(out / "covid_cxr" / ".2.0.0.replaced-killed")  # killed between renames
  (out / ".covid_cxr.staging-killed" / "covid_cxr").mkdir(parents=True)
  covid_cxr.prepare(prepared[0], out)
  assert _tree(out) == before  # tokenizer kept: the old dir was restored before the swap


def test_rebuild_of_changed_data_sets_the_tokenizer_aside(out, real, tmp_path):
  old = (out / VERSION / "tokenizer.model").read_bytes()
  sha = hashlib.sha256(old).hexdigest()
  covid_cxr.prepare(_source(tmp_path / "fewer", real, n=6), out)
  version_dir = out / VERSION
  assert not (version_dir / "tokenizer.model").exists()
  assert (version_dir / "replaced" / f"tokenizer-{sha[:16]}.model").read_bytes() == old
  manifest = json.loads((version_dir / "manifest.json").read_text())
  assert "tokenizer" not in manifest and manifest["records"] == 6
  assert [t["sha256"] for t in manifest["replaced_tokenizers"]] == [sha]
  with pytest.raises(FileNotFoundError, match="no tokenizer; train one"):
    pipeline.load_tokenizer(synthetic_data.synth_cfg(dir=str(out), name="covid_cxr"))


# ---- Paths stay inside the source; a long cell and a huge image are skips ------------------------
def _huge_png(path: Path, side: int = 9400) -> None:
  """A valid 16-bit grayscale PNG of side x side zeros: ~0.8 MB on disk, 169 MiB decoded."""
  def chunk(kind, data):
    return (len(data).to_bytes(4, "big") + kind + data
            + zlib.crc32(kind + data).to_bytes(4, "big"))
  z, rows = zlib.compressobj(1), bytes((1 + 2 * side) * 100)
  idat = b"".join([z.compress(rows) for _ in range(side // 100)] + [z.flush()])
  header = side.to_bytes(4, "big") * 2 + bytes([16, 0, 0, 0, 0])
  path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
                   + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def hostile(real, tmp_path_factory):
  """One conversion of real rows, then rows naming files out of the source in every way, a
  notes cell over the csv limit and a 9400 x 9400 16-bit PNG. Returns (manifest, rows)."""
  root = tmp_path_factory.mktemp("hostile")
  outside = root / "outside"
  outside.mkdir()
  secret = real[2] / real[1][9]["file"]  # a real X-ray the rows below must not pull in
  shutil.copy(secret, outside / "secret.png")
  src = root / "src"
  (src / "images").mkdir(parents=True)
  (src / "images" / "link.png").symlink_to(outside / "secret.png")
  (src / "linked_folder").symlink_to(outside)
  (src / "other").mkdir()
  shutil.copy(real[2] / real[1][8]["file"], src / "other" / "x.png")
  (src / "images" / "inner.png").symlink_to(src / "other" / "x.png")
  _huge_png(src / "images" / "huge.png")
  rows = {  # case -> (row fields, expected: column of the skip, or None for a record)
      "absolute_file": ({"file": str(outside / "secret.png")}, "file"),
      "dotdot_file": ({"file": "../../outside/secret.png"}, "file"),
      "absolute_folder": ({"folder": str(outside), "file": "secret.png"}, "folder"),
      "dotdot_folder": ({"folder": "../outside", "file": "secret.png"}, "folder"),
      "symlinked_folder": ({"folder": "linked_folder", "file": "secret.png"}, "folder"),
      "symlink_out": ({"file": "link.png"}, "file"),
      "nul_in_name": ({"file": "a\x00b.png"}, "file"),
      "symlink_within": ({"file": "inner.png", "patient_group": "p_inner"}, None),
      "notes_over_csv_limit": ({"file": real[1][8]["file"], "patient_group": "p_long",
                                "clinical_notes": "x" * (tables.MAX_CELL + 1)}, "clinical_notes"),
      "huge_16_bit_png": ({"file": "huge.png", "patient_group": "p_huge"}, None),
  }
  _source(src, real, n=8, extra=[fields for fields, _ in rows.values()])
  manifest = covid_cxr.prepare(src, root / "out")
  return manifest, {case: (8 + i + 1, column) for i, (case, (_, column)) in enumerate(rows.items())}


@pytest.mark.parametrize("case", ["absolute_file", "dotdot_file", "absolute_folder",
                                  "dotdot_folder", "symlinked_folder", "symlink_out",
                                  "nul_in_name", "notes_over_csv_limit"])
def test_hostile_row_is_a_skip_naming_row_and_column(hostile, case):
  manifest, rows = hostile
  row, column = rows[case]
  (entry,) = [s for s in manifest["skipped"] if s.get("row") == row]
  assert entry["column"] == column, entry
  reason = "cell too long" if case == "notes_over_csv_limit" else (
      "invalid path" if case == "nul_in_name" else "path outside the source dir")
  assert entry["reason"].startswith(reason), entry
  assert manifest["skipped_by_reason"][entry["reason"].split(":")[0]] >= 1


def test_hostile_rows_leave_every_other_row_and_no_outside_file(hostile, real):
  manifest, rows = hostile
  assert manifest["rows_read"] == 8 + len(rows)  # the long cell did not stop the reader
  assert manifest["records"] == 8 + 1  # the real rows and the symlink within the source
  assert len(manifest["skipped"]) == len(rows) - 1
  assert "inner.png" not in {s.get("file") for s in manifest["skipped"]}


def test_huge_image_is_skipped_from_its_header(hostile):
  manifest, rows = hostile
  (entry,) = [s for s in manifest["skipped"] if s.get("row") == rows["huge_16_bit_png"][0]]
  assert entry["file"] == "images/huge.png"
  assert entry["reason"].startswith("image too large: 9400x9400 = 88360000 pixels, limit 40000000")


def test_decoded_size_counts_the_bit_depth(tmp_path, real):
  pixels = np.random.default_rng(0).integers(0, 255, (800, 800))
  src = _source(tmp_path / "src", real, n=2, extra=[{"file": "deep.png", "patient_group": "pd"},
                                                    {"file": "flat.png", "patient_group": "pf"}])
  Image.fromarray(pixels.astype(np.uint16) * 200).save(src / "images" / "deep.png")  # 1.2 MiB
  Image.fromarray(pixels.astype(np.uint8), "L").save(src / "images" / "flat.png")  # 0.6 MiB
  m = covid_cxr.prepare(src, tmp_path / "out", max_decoded_mb=1)
  (entry,) = m["skipped"]
  assert entry["file"] == "images/deep.png" and entry["reason"].startswith(
      "decoded image too large: 800x800 x 2 bytes per pixel = 1 MiB, limit 1 MiB")
  assert m["records"] == 3 and m["max_decoded_mb"] == 1


def test_mimic_ids_and_symlinks_stay_in_the_source(tmp_path):
  src = layouts.mimic(tmp_path / "src")
  outside = layouts.xray(tmp_path / "outside" / "x.jpg", seed=99, fmt="JPEG")
  (tmp_path / "outside" / "r.txt").write_text(layouts.MIMIC_REPORT)
  study = src / "files" / "p10" / "p10000032" / "s53189527"
  (study / "d3.jpg").unlink()
  (study / "d3.jpg").symlink_to(outside)
  report = src / "files" / "p10" / "p10000764" / "s57375967.txt"
  report.unlink()
  report.symlink_to(tmp_path / "outside" / "r.txt")
  meta = src / "mimic-cxr-2.0.0-metadata.csv"
  meta.write_text(meta.read_text() + "d9,../../outside,5000,x,PA,1,1,1,1,x,x,x\n")
  m = mimic_cxr.prepare(src, tmp_path / "out", max_pixels=10_000)
  by_id = {(s.get("id"), s.get("column"), s.get("part")): s for s in m["skipped"]}
  assert by_id["53189527", "dicom_id", None]["reason"].startswith("path outside the source dir")
  assert by_id[None, "subject_id", None]["row"] == 6
  assert by_id["57375967", None, "report"]["reason"] == (
      "report dropped: path outside the source dir")
  # the DICOM view (128 x 128) is over max_pixels: its study had no other view
  (dicom,) = [s for s in m["skipped"] if s.get("file", "").endswith("d4.dcm")]
  assert dicom["reason"].startswith("image too large: 128x128 = 16384 pixels, limit 10000")
  assert m["records"] == 2


def test_chexpert_path_stays_in_the_source(tmp_path):
  layouts.xray(tmp_path / "patient00009" / "study1" / "view1_frontal.jpg", seed=9, fmt="JPEG")
  src = layouts.chexpert(tmp_path / "CheXpert-v1.0-small", extra_train_rows=[layouts.chexpert_row(
      "CheXpert-v1.0-small/../patient00009/study1/view1_frontal.jpg", "Frontal", "AP", {})])
  m = chexpert.prepare(src, tmp_path / "out")
  (entry,) = [s for s in m["skipped"] if s["row"] == 5]
  assert entry["column"] == "Path" and entry["reason"].startswith("path outside the source dir")
  assert m["records"] == 4


# ---- Every flag is checked before any file work --------------------------------------------------
FLAGS = [  # (converter, flag, value, words of the error)
    (covid_cxr, "--max_side", "-1", "must be 0 (keep the size) or an integer >= 32"),
    (covid_cxr, "--max_side", "8", "must be 0 (keep the size) or an integer >= 32"),
    (covid_cxr, "--val_fraction", "1.5", "must be a number in (0, 1)"),
    (covid_cxr, "--val_fraction", "0", "must be a number in (0, 1)"),
    (covid_cxr, "--val_fraction", "nan", "must be a number in (0, 1)"),
    (covid_cxr, "--seed", "-3", "must be an integer in [0, 2**32)"),
    (covid_cxr, "--seed", "1.5", "must be an integer in [0, 2**32)"),
    (covid_cxr, "--num_workers", "-1", "must be an integer in [0, "),
    (covid_cxr, "--num_workers", "100000", "must be an integer in [0, "),
    (covid_cxr, "--max_pixels", "0", "must be an integer >= 1024"),
    (covid_cxr, "--max_decoded_mb", "0", "must be an integer >= 1"),
    (covid_cxr, "--src", "{tmp}/missing", "does not exist"),
    (covid_cxr, "--src", "{real}/metadata.csv", "is not a directory"),
    (iu_xray, "--src", "{real}", "is not a file"),
    (covid_cxr, "--out", "{real}/metadata.csv", "is not a directory"),
    (covid_cxr, "--out", "{real}/metadata.csv/sub", "is not writable"),
    (covid_cxr, "--src", "{tmp}/out/covid_cxr/2.0.0", "which the conversion replaces"),
]


@pytest.mark.parametrize("converter, flag, value, words", FLAGS)
def test_bad_flag_is_an_error_naming_it(converter, flag, value, words, shared_data, tmp_path,
                                        capsys):
  real_dir = shared_data / "covid-chestxray"
  args = {"--src": str(real_dir), "--out": str(tmp_path / "out"),
          flag: value.format(tmp=tmp_path, real=real_dir)}
  if "2.0.0" in value:
    Path(args["--src"]).mkdir(parents=True)
  with pytest.raises(SystemExit) as exit_:
    converter.main([x for kv in args.items() for x in kv])
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  assert f"argument {flag}: " in err and words in err, err
  assert "2.0.0" in value or not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize("argv, words", [
    (["--vocab_size", "5"], "argument --vocab_size: must be an integer in [16, 1000000]"),
    (["--name", "mimic_cxr"], "argument --name: no prepared dataset 'mimic_cxr'"),
    (["--out", "{out}"], "argument --out: "),
])
def test_bad_tokenizer_flag_is_an_error_naming_it(argv, words, prepared, capsys):
  before = _tree(prepared[1])
  with pytest.raises(SystemExit) as exit_:
    tokenizer.main(["--data_dir", str(prepared[1]), *(a.format(out=prepared[1]) for a in argv)])
  assert exit_.value.code == 2 and words in capsys.readouterr().err
  assert _tree(prepared[1]) == before


def test_library_options_are_checked_before_reading(tmp_path):
  with pytest.raises(ValueError, match=r"max_side=-1: must be 0 \(keep the size\)"):
    covid_cxr.prepare(tmp_path, tmp_path / "out", max_side=-1)
  with pytest.raises(ValueError, match="val_fraction='0.2': must be a number in"):
    covid_cxr.prepare(tmp_path, tmp_path / "out", val_fraction="0.2")
  assert not (tmp_path / "out").exists()
