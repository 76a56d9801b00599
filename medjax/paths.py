"""The one path API of medjax: local paths and cloud URLs (gs://..., s3://...) alike.

Every workdir, data dir, init_from and export path goes through `path()`, an `etils.epath.Path`
(what Orbax and TFDS use themselves), so a `gs://` URL reaches them as the URL it is, never
turned into a local path. Cloud access needs the filesystem package of its scheme (gcsfs for
gs://); nothing is read before the first real access.
"""
from __future__ import annotations

import os
import uuid

from etils import epath

Path = epath.Path
PathLike = str | os.PathLike


def is_url(value: PathLike) -> bool:
  return "://" in os.fspath(value)


def path(value: PathLike) -> epath.Path:
  """`value` as an epath.Path: a URL unchanged, a local path made absolute (with ~ expanded),
  so what a run records does not depend on the directory it was started from."""
  text = os.fspath(value)
  if not text:
    raise ValueError("empty path")
  if is_url(text):
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def cache_dir() -> epath.Path:
  """Where medjax keeps what it can recompute (e.g. verified shard hashes): $MEDJAX_CACHE_DIR,
  else ~/.cache/medjax."""
  return path(os.environ.get("MEDJAX_CACHE_DIR") or "~/.cache/medjax")


def write_atomic(target: PathLike, data: bytes | str) -> None:
  """Writes `data` to a temporary name beside `target`, then renames it over `target`: a reader
  sees the old file or the new one, never a half-written one."""
  target = path(target)
  tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
  if isinstance(data, str):
    tmp.write_text(data)
  else:
    tmp.write_bytes(data)
  tmp.replace(target)
