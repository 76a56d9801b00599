"""The options of the converters and the tokenizer step, checked before any file is touched.

One table serves both ways in: the CLI (argparse: an error naming the flag and its allowed range,
exit code 2, nothing written) and the library (`check`: ValueError naming the argument).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
from pathlib import Path

from medjax.data_prep import images

# More decoding processes than this only thrash (image decoding is CPU-bound; a few per CPU hide
# file reads from network storage).
_MAX_WORKERS = max(8, 4 * (os.cpu_count() or 1))


@dataclasses.dataclass(frozen=True)
class Option:
  type: type
  default: object
  allowed: str  # the rule in words, as errors state it
  ok: object  # value -> bool
  help: str


OPTIONS = {
    "seed": Option(int, 0, "an integer in [0, 2**32)", lambda v: 0 <= v < 2**32,
                   "seed of the patient-hash split"),
    "val_fraction": Option(
        float, 0.15, "a number in (0, 1)", lambda v: 0 < v < 1,
        "share of patients in validation (sources without a published split); 0 or 1 would "
        "leave a split empty"),
    # A longest side under MIN_SIDE would shrink every X-ray to a few identical pixels.
    "max_side": Option(int, 512, f"0 (keep the size) or an integer >= {images.MIN_SIDE}",
                       lambda v: v == 0 or v >= images.MIN_SIDE, "longest image side"),
    "num_workers": Option(int, 0, f"an integer in [0, {_MAX_WORKERS}] (4 per CPU, at least 8)",
                          lambda v: 0 <= v <= _MAX_WORKERS, "image decoding processes"),
    "max_pixels": Option(
        int, images.MAX_PIXELS, f"an integer >= {images.MIN_SIDE ** 2}",
        lambda v: v >= images.MIN_SIDE ** 2,
        "images whose header declares more pixels are skipped before decoding"),
    "max_decoded_mb": Option(
        int, images.MAX_DECODED_MB, "an integer >= 1", lambda v: v >= 1,
        "images whose decoded size (pixels x bytes per pixel) exceeds this many MiB are skipped "
        "before decoding"),
    "vocab_size": Option(int, 4000, "an integer in [16, 1000000]", lambda v: 16 <= v <= 10**6,
                         "sentencepiece vocabulary size"),
}
CONVERTER = ("seed", "val_fraction", "max_side", "num_workers", "max_pixels", "max_decoded_mb")


def problem(name: str, value) -> str | None:
  """What is wrong with `value` for option `name`, or None."""
  option = OPTIONS[name]
  types = (int, float) if option.type is float else (option.type,)
  if isinstance(value, bool) or not isinstance(value, types):
    return f"must be {option.allowed}, got {value!r} of type {type(value).__name__}"
  if isinstance(value, float) and not math.isfinite(value) or not option.ok(value):
    return f"must be {option.allowed}, got {value!r}"
  return None


def check(**values) -> None:
  """Raises ValueError naming the first bad option."""
  for name, value in values.items():
    why = problem(name, value)
    if why:
      raise ValueError(f"{name}={value!r}: {why}")


def add_arguments(parser: argparse.ArgumentParser, names) -> None:
  """`--name` flags whose values are checked as they are parsed."""
  for name in names:
    option = OPTIONS[name]

    def parse(text: str, name=name, option=option):
      try:
        value = option.type(text)
      except ValueError:
        raise argparse.ArgumentTypeError(f"must be {option.allowed}, got {text!r}") from None
      why = problem(name, value)
      if why:
        raise argparse.ArgumentTypeError(why)
      return value

    parser.add_argument(f"--{name}", type=parse, default=option.default,
                        help=f"{option.help} ({option.allowed}; default {option.default})")


def source_problem(src, kind: str) -> str | None:
  """`kind`: "dir" or "file", what the converter reads."""
  path = Path(src)
  if not path.exists():
    return f"{src} does not exist"
  if kind == "dir" and not path.is_dir():
    return f"{src} is not a directory"
  if kind == "file" and not path.is_file():
    return f"{src} is not a file"
  if not os.access(path, os.R_OK | (os.X_OK if kind == "dir" else 0)):
    return f"{src} is not readable"
  return None


def output_problem(out) -> str | None:
  """An output dir must be a local, writable dir, or not exist yet below a writable one. A
  conversion is written aside and swapped in with local renames (publish.py): a bucket is
  filled by copying the finished dataset there, which training then reads directly."""
  if "://" in str(out):
    return (f"{out} is a URL: convert into a local directory, then copy it (gcloud storage cp "
            "-r DIR gs://BUCKET/...); training reads the copy from the bucket")
  path = Path(out).absolute()
  if path.exists() and not path.is_dir():
    return f"{out} is not a directory"
  existing = next(p for p in (path, *path.parents) if p.exists())
  if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
    return f"{out} is not writable ({existing} is not a writable directory)"
  return None
