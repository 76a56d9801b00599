"""Sources that cannot be converted as a whole raise a ValueError naming the file (and the
patients, for a leaking split); a study whose views disagree on the split is a counted skip.
The per-file and per-row cases are in test_malformed.py."""
from pathlib import Path

import pytest

from medjax.data_prep import chexpert, covid_cxr, iu_xray, mimic_cxr

import layouts


def _row(name: str) -> list:
  return [name, f"p_{name}", "covid19", "PA", "n", "Y", "", "", "N"]


def _mimic_with_splits(root: Path, splits: dict[str, str]) -> Path:
  """The layouts.mimic tree with the split.csv rows of some dicom ids changed."""
  src = layouts.mimic(root)
  rows = [r.split(",") for r in (src / "mimic-cxr-2.0.0-split.csv").read_text().splitlines()]
  rows = [r[:3] + [splits.get(r[0], r[3])] for r in rows]
  layouts.write_csv(src / "mimic-cxr-2.0.0-split.csv", rows[0], rows[1:])
  return src


def test_study_split_across_two_splits_is_a_skip(tmp_path):
  m = mimic_cxr.prepare(_mimic_with_splits(tmp_path / "src", {"d2": "test"}), tmp_path / "out")
  (entry,) = [s for s in m["skipped"] if s.get("id") == "50414267"]
  assert entry["reason"].startswith("images of the study not in one known split")
  assert m["records"] == 3


def _drop_column(path: Path, column: str) -> None:
  rows = [r.split(",") for r in path.read_text().splitlines()]
  i = rows[0].index(column)
  layouts.write_csv(path, rows[0][:i] + rows[0][i + 1:], [r[:i] + r[i + 1:] for r in rows[1:]])


def _broken_archive(root: Path) -> Path:
  root.mkdir(parents=True)
  (root / "NLMCXR_reports.tgz").write_bytes(b"\x1f\x8b\x08 truncated")
  return root / "NLMCXR_reports.tgz"


def _no_usable_study(root: Path) -> Path:
  root.mkdir(parents=True)
  layouts.write_csv(root / "metadata.csv", layouts.COVID_COLUMNS, [_row("a.png"), _row("b.png")])
  return root


BROKEN = {  # a source that cannot be converted at all: (build, converter, error pattern)
    "patient_on_both_sides_of_the_split": (
        lambda r: _mimic_with_splits(r, {"d3": "test"}), mimic_cxr,
        r"split leakage: patients \['10000032'\]"),
    "missing_column": (
        lambda r: (_drop_column(layouts.mimic(r) / "mimic-cxr-2.0.0-metadata.csv", "ViewPosition")
                   or r), mimic_cxr, r"mimic-cxr-2\.0\.0-metadata\.csv: missing required column "
                                     r"'ViewPosition'"),
    "corrupt_archive": (_broken_archive, iu_xray, r"NLMCXR_reports\.tgz: not a readable reports"),
    "no_usable_study": (_no_usable_study, covid_cxr, r"no usable study \(2 skipped"),
    "missing_table": (lambda r: r.mkdir(parents=True) or r, chexpert, r"train\.csv"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_source_raises_naming_it(name, tmp_path):
  build, converter, pattern = BROKEN[name]
  with pytest.raises((ValueError, FileNotFoundError), match=pattern):
    converter.prepare(build(tmp_path / "src"), tmp_path / "out")
