"""A prepared dataset's shards, checked against its manifest when the pipeline opens them.

Every open compares each shard's size with the manifest (one stat per file). Its sha256 is
computed once per version of the file and remembered in <paths.cache_dir()>/shard_sha256.json,
keyed by the path and what any rewrite changes: size, modification and change times (ns) and
inode locally (the change time cannot be set back by hand), size and modification time for a
cloud URL. A missing, truncated, corrupted or swapped shard is an error naming the file and the
dataset, before any record is read.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os

from medjax import paths

log = logging.getLogger(__name__)

CACHE_FILE = "shard_sha256.json"


def fingerprint(path: str) -> list:
  """What changes when the file at `path` is rewritten (raises FileNotFoundError)."""
  if paths.is_url(path):
    st = paths.path(path).stat()
    return [st.length, st.mtime]
  st = os.stat(path)
  return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def sha256(path: str) -> str:
  h = hashlib.sha256()
  with paths.path(path).open("rb") as f:
    for chunk in iter(lambda: f.read(1 << 22), b""):
      h.update(chunk)
  return h.hexdigest()


def verify(dataset: str, version_dir, expected: dict[str, str], sizes: dict[str, int]) -> None:
  """Raises ValueError unless every shard `expected` lists (file name -> sha256) is in
  `version_dir` with its manifest size (`sizes`; older manifests have none) and hash."""
  cache, todo = _load(), []
  for name in sorted(expected):
    path = os.fspath(paths.path(version_dir) / name)
    try:
      mark = fingerprint(path)
    except FileNotFoundError:
      raise ValueError(f"{dataset}: shard {path} is missing; re-run its data_prep "
                       "converter") from None
    if name in sizes and mark[0] != sizes[name]:
      raise ValueError(f"{dataset}: shard {path} has {mark[0]} bytes, its manifest says "
                       f"{sizes[name]}: truncated or replaced; re-run its data_prep converter")
    if cache.get(path, [None])[0] != mark:
      todo.append((path, mark))
  if todo:
    log.info("%s: hashing %d shard(s) once (%.1f MiB)", dataset, len(todo),
             sum(m[0] for _, m in todo) / 2**20)
    workers = min(len(todo), os.cpu_count() or 1, 8)  # hashlib releases the GIL
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      hashes = list(pool.map(sha256, [p for p, _ in todo]))
    cache.update({p: [m, h] for (p, m), h in zip(todo, hashes)})
    _save(cache)
  for name, want in sorted(expected.items()):
    path = os.fspath(paths.path(version_dir) / name)
    got = cache[path][1]
    if got != want:
      raise ValueError(f"{dataset}: shard {path} does not match its manifest (sha256 {got[:16]}, "
                       f"expected {want[:16]}): corrupted or swapped; re-run its data_prep "
                       "converter")


def _load() -> dict:
  try:
    return json.loads((paths.cache_dir() / CACHE_FILE).read_text())
  except (OSError, ValueError):  # none yet, or unreadable: every shard is hashed again
    return {}


def _save(cache: dict) -> None:
  target = paths.cache_dir() / CACHE_FILE
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
    paths.write_atomic(target, json.dumps(cache))
  except OSError as e:  # a read-only home: shards are hashed at every start instead
    log.warning("cannot cache shard hashes in %s (%s): they will be hashed again", target, e)
