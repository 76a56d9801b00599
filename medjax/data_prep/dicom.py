"""DICOM -> 8-bit grayscale PIL image, the way a viewer would show it.

Order (DICOM PS3.3 C.11): stored values -> modality LUT (rescale slope/intercept) -> VOI LUT or
window (`pydicom`'s `apply_voi_lut`) -> MONOCHROME1 inversion -> 0..255.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut


def _voi_range(arr: np.ndarray, ds) -> tuple[float, float]:
  """Output range of the VOI transform: the same transform applied to the most extreme inputs
  (windowing clips to that range; a VOI LUT's first and last entries bound it)."""
  if np.issubdtype(arr.dtype, np.integer):
    info = np.iinfo(arr.dtype)
    probe = np.array([info.min, info.max], arr.dtype)
  else:
    probe = np.array([-1e30, 1e30], arr.dtype)
  lo, hi = apply_voi_lut(probe, ds)
  return float(min(lo, hi)), float(max(lo, hi))


def header_size(path) -> tuple[int, int, int]:
  """(width, height, bytes per pixel of one frame's decoded values) from the header alone; raises
  ValueError like `read_dicom`."""
  path = Path(path)
  try:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if "Rows" not in ds or "Columns" not in ds:
      raise ValueError("DICOM has no pixel data (no Rows / Columns)")
    width, height = int(ds.Columns), int(ds.Rows)
    bits, samples = int(ds.get("BitsAllocated") or 8), int(ds.get("SamplesPerPixel") or 1)
  except (pydicom.errors.InvalidDicomError, AttributeError, TypeError, ValueError, KeyError) as e:
    raise ValueError(f"{path}: {type(e).__name__}: {e}") from None
  return width, height, -(-bits // 8) * samples


def read_dicom(path) -> Image.Image:
  """Raises ValueError naming the file when there is nothing a radiograph viewer could show: not
  DICOM, no pixel data, several frames, bad values, or pixel data pydicom cannot decode (e.g. a
  compression whose optional plugin is not installed)."""
  path = Path(path)
  try:
    return _read(pydicom.dcmread(path))
  except (pydicom.errors.InvalidDicomError, RuntimeError, NotImplementedError, ValueError,
          AttributeError, KeyError, TypeError) as e:
    raise ValueError(f"{path}: {type(e).__name__}: {e}") from None


def _read(ds) -> Image.Image:
  if "PixelData" not in ds:
    raise ValueError("DICOM has no pixel data")
  frames = int(ds.get("NumberOfFrames") or 1)
  if frames > 1:
    raise ValueError(f"DICOM has {frames} frames; a radiograph has one")
  arr = ds.pixel_array
  photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
  if photometric == "PALETTE COLOR":
    arr = apply_color_lut(arr, ds)
  if arr.ndim == 3:  # colour (pydicom already converted YBR to RGB): its luminance
    if arr.dtype != np.uint8:
      arr = _to_uint8(arr, float(arr.min()), float(arr.max()))
    return Image.fromarray(arr, "RGB").convert("L")
  arr = apply_modality_lut(arr, ds)
  if "WindowCenter" in ds or "VOILUTSequence" in ds:
    lo, hi = _voi_range(arr, ds)
    arr = apply_voi_lut(arr, ds)
  else:  # no display window stored: use the whole range the image really spans
    lo, hi = float(arr.min()), float(arr.max())
  if photometric == "MONOCHROME1":  # 0 is white
    arr = hi + lo - np.asarray(arr, np.float64)
  return Image.fromarray(_to_uint8(arr, lo, hi), "L")


def _to_uint8(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
  arr = np.clip(np.asarray(arr, np.float64), lo, hi)
  return np.round((arr - lo) * (255.0 / (hi - lo)) if hi > lo else arr * 0).astype(np.uint8)
