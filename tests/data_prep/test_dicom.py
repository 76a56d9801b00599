"""data_prep/dicom.py on the DICOM files pydicom ships (and variants of them written here)."""
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medjax.data_prep import dicom, images


def _read(path) -> np.ndarray:
  img = dicom.read_dicom(path)
  assert img.mode == "L"
  return np.asarray(img).astype(np.int64)


def test_ct_rescale_slope_intercept_without_window():
  ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
  assert "WindowCenter" not in ds and ds.RescaleIntercept == -1024  # 16-bit signed, in HU
  hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
  expected = np.round((hu - hu.min()) / (hu.max() - hu.min()) * 255)
  assert np.array_equal(_read(get_testdata_file("CT_small.dcm")), expected)


def test_mr_window_center_width():
  ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
  c, w = float(ds.WindowCenter), float(ds.WindowWidth)
  x = ds.pixel_array.astype(np.float64)
  expected = np.clip(((x - (c - 0.5)) / (w - 1) + 0.5), 0, 1) * 255  # DICOM PS3.3 C.11.2.1.2
  out = _read(get_testdata_file("MR_small.dcm"))
  assert np.abs(out - expected).max() <= 1 and out.min() > 0  # the window is wider than the data


def test_monochrome1_is_inverted(tmp_path):
  ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
  ds.PhotometricInterpretation = "MONOCHROME1"
  ds.save_as(tmp_path / "mono1.dcm")
  normal, inverted = _read(get_testdata_file("MR_small.dcm")), _read(tmp_path / "mono1.dcm")
  assert np.abs(normal + inverted - 255).max() <= 1


def test_voi_lut_sequence_wins(tmp_path):
  ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
  lut = 4095 - np.minimum(4095, np.arange(4096) * 2)
  item = Dataset()
  item.LUTDescriptor = [4096, 0, 16]
  item.LUTData = lut.astype("<u2").tobytes()
  ds.VOILUTSequence = Sequence([item])
  ds.save_as(tmp_path / "voi.dcm")
  x = np.clip(ds.pixel_array, 0, 4095)
  expected = np.round((lut[x] - lut.min()) / (lut.max() - lut.min()) * 255)
  assert np.abs(_read(tmp_path / "voi.dcm") - expected).max() <= 1


@pytest.mark.parametrize("name", ["examples_palette.dcm", "SC_rgb_rle_16bit.dcm",
                                  "examples_overlay.dcm", "JPEG2000.dcm"])
def test_colour_palette_and_compressed_files_give_8bit_gray(name):
  out = _read(get_testdata_file(name))
  assert out.min() >= 0 and out.max() <= 255 and out.std() > 5


@pytest.mark.parametrize("name, message", [
    ("rtplan.dcm", "DICOM has no pixel data"),
    ("rtdose.dcm", "DICOM has 15 frames"),
])
def test_unusable_files_are_named(name, message):
  path = get_testdata_file(name)
  with pytest.raises(ValueError, match=f"{Path(path).name}.*{message}"):
    dicom.read_dicom(path)


def test_not_dicom_is_named(tmp_path):
  (tmp_path / "fake.dcm").write_bytes(b"\x00" * 200)
  with pytest.raises(ValueError, match=r"fake\.dcm"):
    dicom.read_dicom(tmp_path / "fake.dcm")


def test_converters_route_dcm_files(tmp_path):
  img = images.load_gray(get_testdata_file("CT_small.dcm"), max_side=64)
  assert img.mode == "L" and img.size == (64, 64)
  (tmp_path / "x.dcm").write_bytes(Path(get_testdata_file("rtplan.dcm")).read_bytes())
  with pytest.raises(images.ImageError, match="cannot decode image: .*no pixel data"):
    images.load_gray(tmp_path / "x.dcm")
