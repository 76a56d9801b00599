"""CSV metadata tables, read so that one bad row never stops a conversion, and the paths they
name, kept inside the source dir.

A missing column is a broken source: ValueError naming the file and column. A row with bytes
that are not UTF-8, the wrong number of fields or a cell over MAX_CELL characters is a skip
entry naming file, row (and column).
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import re
from pathlib import Path

from medjax import contract

_ESCAPED = re.compile("[\udc80-\udcff]")  # bytes the UTF-8 decoder could not read
# Longest cell kept: Python's own csv field limit, 128 Ki characters, 30x the longest clinical
# note of the covid sample (4 K) and longer than any radiology report. A longer cell is not a
# note but a paste or an unbalanced quote, which makes one cell of every line up to the next
# quote; the model reads at most data.text_len tokens of a text anyway.
MAX_CELL = 1 << 17


class CellError(ValueError):
  """A bad value in one column of a row."""

  def __init__(self, column: str, message: str):
    super().__init__(message)
    self.column = column


def skip_entry(file: str, row: int, error: ValueError, **more) -> dict:
  column = {"column": error.column} if isinstance(error, CellError) else {}
  return {"file": file, "row": row, **column, **more, "reason": str(error)}


@dataclasses.dataclass
class Table:
  rows: list[tuple[int, dict]]  # (data row number, the header being row 0; row) of usable rows
  columns: dict[str, str]  # field -> the column name found for it
  skipped: list[dict]
  rows_read: int


def find(directory: Path, name: str) -> Path:
  """`name` or its gzipped form (MIMIC-CXR-JPG ships its tables as .csv.gz)."""
  for path in (directory / name, directory / f"{name}.gz"):
    if path.is_file():
      return path
  raise FileNotFoundError(f"{directory / name}: no such file (nor .gz)")


def read_csv(path: Path, required: dict[str, tuple[str, ...]] | None = None) -> Table:
  """`required`: field -> acceptable column names, the first present one is used."""
  data = path.read_bytes()
  if path.suffix == ".gz":
    data = gzip.decompress(data)
  text = data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
  reader = csv.DictReader(io.StringIO(text, newline=""))
  present = set(reader.fieldnames or ())
  columns = {}
  for field, names in (required or {}).items():
    found = [n for n in names if n in present]
    if not found:
      raise ValueError(f"{path}: missing required column {' or '.join(map(repr, names))}")
    columns[field] = found[0]
  rows, skipped, n, line = [], [], 0, reader.line_num
  parser_limit = csv.field_size_limit()
  # The parser itself never stops at a long cell (its limit is process-wide, hence restored):
  # the row with one becomes a skip entry below, and the rows after it are read on.
  csv.field_size_limit(max(parser_limit, len(text) + 1))
  try:
    for n, row in enumerate(reader, start=1):
      lines, line = (line + 1, reader.line_num), reader.line_num
      if None in row or None in row.values():  # csv puts extra fields under None, pads with None
        skipped.append({"file": path.name, "row": n,
                        "reason": f"malformed row: {len(reader.fieldnames)} columns expected"})
        continue
      long = [k for k, v in row.items() if len(v) > MAX_CELL]
      if long:
        skipped.append({"file": path.name, "row": n, "column": long[0],
                        "reason": f"cell too long: {len(row[long[0]])} characters in column "
                                  f"{long[0]!r} (lines {lines[0]}-{lines[1]}), limit {MAX_CELL}"})
        continue
      broken = [k for k, v in row.items() if _ESCAPED.search(v)]
      if broken:
        skipped.append({"file": path.name, "row": n, "column": broken[0],
                        "reason": f"invalid UTF-8 bytes in column {broken[0]!r}"})
        continue
      rows.append((n, row))
  finally:
    csv.field_size_limit(parser_limit)
  return Table(rows, columns, skipped, n)


def outside(src: Path, path: Path) -> str | None:
  """Why `path` is not in the source dir `src` (absolute parts, `..` and symlinks resolved), or
  None when it is. A source assembled from symlinks to elsewhere is refused too: point --src at
  the real dir."""
  try:
    return None if path.resolve().is_relative_to(src.resolve()) else "path outside the source dir"
  except (OSError, RuntimeError, ValueError) as e:  # a NUL byte; a symlink loop (3.11)
    return f"invalid path ({e})"


def source_path(src: Path, column: str, *parts: str) -> Path:
  """`src.joinpath(*parts)` when it lies inside `src` (see `outside`), else CellError naming
  `column`: a table must not pull any file of the machine into the records."""
  path = src.joinpath(*parts)
  why = outside(src, path)
  if why:
    raise CellError(column, f"{why} in column {column!r}: {str(Path(*parts))!r}")
  return path


def chexpert_labels(row: dict) -> dict[str, int]:
  """Labels from CheXpert-style columns ("No Finding", ..., values 1.0 / 0.0 / -1.0 / blank), as
  in CheXpert's CSVs and MIMIC-CXR's chexpert.csv. Blank and NaN are not stated; anything else
  raises ValueError naming the column. Both sets predate 2019: no COVID-19, and a pneumonia is
  another pneumonia. Raises CellError."""
  labels = {}
  for name in contract.CHEXPERT:
    column = name.replace("_", " ").title()
    value = row.get(column)
    if value is None:
      raise CellError(column, f"missing label column {column!r}")
    value = value.strip()
    if value.lower() in ("", "nan"):
      continue
    try:
      code = float(value)
    except ValueError:
      code = None
    if code not in (1.0, 0.0, -1.0):
      raise CellError(column, f"bad label value {value!r} in column {column!r}")
    labels[name] = int(code)
  labels["covid19"] = 0
  if "pneumonia" in labels:
    labels["other_pneumonia"] = labels["pneumonia"]
  return labels
