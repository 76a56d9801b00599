"""Image files -> 8-bit grayscale, checked, optionally downscaled, and re-encoded as PNG.

Every failure raises `ImageError` whose message starts with a short reason kind ("cannot decode
image", "image too small", ...): converters record it as a counted skip naming the file.
"""
from __future__ import annotations

import hashlib
import io
import multiprocessing
from pathlib import Path

import numpy as np
from PIL import Image, ImageMode, ImageOps

from medjax.data_prep import dicom

SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".tif", ".tiff", ".bmp")
MIN_SIDE = 32  # smaller is a thumbnail or an icon, not a radiograph
MAX_ASPECT = 5.0  # radiographs are near square (the covid sample tops out at 2.2); more is a strip
# Decoding limits, checked from the file header before any pixel is decoded: a few hundred KB of
# PNG can declare 9400 x 9400 16-bit pixels and take a converter to gigabytes. The largest
# radiography detectors (43 x 43 cm at 100 um) give 4300 x 4300 = 18.5 MP, MIMIC-CXR and
# CheXpert images ~3000 x 3000 at 16 bits (18 MB): the defaults leave twice that room.
MAX_PIXELS = 40_000_000  # width x height
MAX_DECODED_MB = 128  # width x height x bytes per pixel (bit depth x channels), MiB


class ImageError(ValueError):
  pass


def check_size(width: int, height: int, bytes_per_pixel: int, max_pixels: int = MAX_PIXELS,
               max_decoded_mb: int = MAX_DECODED_MB) -> None:
  """Raises ImageError when an image of this header would exceed the decoding limits."""
  pixels = width * height
  if pixels > max_pixels:
    raise ImageError(f"image too large: {width}x{height} = {pixels} pixels, limit {max_pixels} "
                     "(--max_pixels)")
  mib = pixels * bytes_per_pixel / 2**20
  if mib > max_decoded_mb:
    raise ImageError(f"decoded image too large: {width}x{height} x {bytes_per_pixel} bytes per "
                     f"pixel = {mib:.0f} MiB, limit {max_decoded_mb} MiB (--max_decoded_mb)")


def _open(path: Path, max_pixels: int, max_decoded_mb: int) -> Image.Image:
  if path.suffix.lower() not in SUFFIXES:
    raise ImageError(f"unsupported file extension {path.suffix!r} (expected one of {SUFFIXES})")
  if not path.is_file():
    raise ImageError("missing image file")
  try:
    if path.suffix.lower() == ".dcm":
      check_size(*dicom.header_size(path), max_pixels, max_decoded_mb)
      return dicom.read_dicom(path)
    with Image.open(path) as img:  # reads the header only
      mode = ImageMode.getmode(img.mode)
      check_size(*img.size, np.dtype(mode.typestr).itemsize * len(mode.bands), max_pixels,
                 max_decoded_mb)
      img.load()
      return ImageOps.exif_transpose(img)
  except ImageError:
    raise
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    # SyntaxError: PIL's way to reject some broken headers; ValueError: bad DICOM values
    raise ImageError(f"cannot decode image: {type(e).__name__}: {e}") from None


def to_gray(img: Image.Image) -> Image.Image:
  """Any PIL mode -> mode L."""
  if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
    # High bit depth X-rays rarely use the full range (12-bit data is common): stretch min..max.
    # In place: one float64 copy of the pixels at a time (8 bytes per pixel).
    a = np.array(img, np.float64)
    lo, hi = a.min(), a.max()
    a -= lo
    a *= 255.0 / (hi - lo) if hi > lo else 0.0
    return Image.fromarray(np.round(a, out=a).astype(np.uint8), "L")
  if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
    # Transparent pixels carry arbitrary colour; an X-ray background is black.
    rgba = img.convert("RGBA")
    img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
  return img.convert("L")


def load_gray(path, max_side: int = 0, max_pixels: int = MAX_PIXELS,
              max_decoded_mb: int = MAX_DECODED_MB) -> Image.Image:
  """Decodes a PIL-readable image or a DICOM file (.dcm) into checked 8-bit grayscale; the
  longest side is cut to `max_side` (Lanczos) when that is > 0. An image whose header exceeds
  `max_pixels` or `max_decoded_mb` is refused before decoding."""
  img = to_gray(_open(Path(path), max_pixels, max_decoded_mb))
  w, h = img.size
  if min(w, h) < MIN_SIDE:
    raise ImageError(f"image too small: {w}x{h}, need both sides >= {MIN_SIDE}")
  if max(w, h) / min(w, h) > MAX_ASPECT:
    raise ImageError(f"aspect ratio out of range: {w}x{h}, limit {MAX_ASPECT:g}:1")
  if max_side and max(w, h) > max_side:
    scale = max_side / max(w, h)
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                     Image.Resampling.LANCZOS)
  return img


def pixel_sha256(img: Image.Image) -> str:
  """Identity of the pixels, whatever the file encoding (the same X-ray saved twice)."""
  return hashlib.sha256(repr(img.size).encode() + img.tobytes()).hexdigest()


def encode_png(img: Image.Image) -> bytes:
  buf = io.BytesIO()
  # zlib level 1: ~4x faster than the default 6 for ~15% more bytes; decode speed is the same.
  img.save(buf, format="PNG", compress_level=1)
  return buf.getvalue()


def probe(job: tuple) -> tuple[str | None, str | None]:
  """(path, load_gray's limits as a dict) -> (pixel sha256, None) or (None, the ImageError's
  message): a picklable result for worker processes."""
  path, limits = job
  try:
    return pixel_sha256(load_gray(path, **limits)), None
  except ImageError as e:
    return None, str(e)


def encode_all(job: tuple) -> list[bytes]:
  """(paths, load_gray's limits as a dict) -> PNG bytes of each, for worker processes."""
  paths, limits = job
  return [encode_png(load_gray(p, **limits)) for p in paths]


def ordered_map(fn, jobs, workers: int):
  """`map(fn, jobs)` in `workers` processes (0: in this one), results in job order, so output
  and shards do not depend on the worker count. Spawned, not forked: TFDS and absl run threads."""
  if workers <= 0:
    yield from map(fn, jobs)
    return
  with multiprocessing.get_context("spawn").Pool(workers) as pool:
    yield from pool.imap(fn, jobs, chunksize=8)
