"""Puts a converted dataset in place without ever losing the one there before.

A conversion writes into a staging dir inside the output dir and only a complete version dir
(shards, indexes, manifest) replaces the old one, by two renames on one filesystem; a conversion
that fails anywhere leaves the old dataset as it was, byte for byte. One conversion of a dataset
into an output dir runs at a time (a lock file), so what a killed one left behind (staging dirs,
a version dir set aside mid-swap) is recovered or removed by the next.

The tokenizer is trained on a dataset's train split after conversion. A rebuild whose train
shards are byte-identical keeps it (tokenizer.model and its manifest entry). A rebuild that
changes the train split does not: it would describe other text. The old model is kept as
replaced/tokenizer-<sha256[:16]>.model in the new version dir (listed under `replaced_tokenizers`
in the manifest) for models trained with it (data.tokenizer=<that path>); train a new one with
`medjax-prepare tokenizer`.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import shutil
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

TOKENIZER = "tokenizer.model"
REPLACED = "replaced"  # dir of tokenizers whose train split was rebuilt


def staging_dir(out: Path, name: str) -> Path:
  """A new TFDS data_dir for one conversion of `name`, inside `out` (same filesystem)."""
  return out / f".{name}.staging-{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def locked(out: Path, name: str):
  """Holds out/.<name>.lock while converting; another conversion of `name` into `out` fails at
  once instead of interleaving its files with this one's."""
  out.mkdir(parents=True, exist_ok=True)
  with open(out / f".{name}.lock", "a") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise RuntimeError(f"{out}: another conversion of {name} is running (lock "
                         f"{out / f'.{name}.lock'})") from None
    try:
      _recover(out, name)
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _recover(out: Path, name: str) -> None:
  """What a killed conversion left: its staging dirs (removed), and a version dir it had set
  aside but not yet replaced (renamed back)."""
  for staging in out.glob(f".{name}.staging-*"):
    log.warning("%s: removing %s, left by an interrupted conversion", out, staging.name)
    shutil.rmtree(staging)
  for aside in sorted((out / name).glob(".*.replaced-*")):
    final = aside.parent / aside.name[1:].split(".replaced-")[0]
    if final.exists():
      shutil.rmtree(aside)
    else:
      log.warning("%s: restoring %s, set aside by an interrupted conversion", final, aside.name)
      aside.rename(final)


def swap(new: Path, final: Path) -> None:
  """Makes the complete version dir `new` the dataset at `final`; the old one is removed only
  after the new one is in place."""
  final.parent.mkdir(parents=True, exist_ok=True)
  aside = final.parent / f".{final.name}.replaced-{uuid.uuid4().hex[:12]}"
  if final.exists():
    final.rename(aside)
  new.rename(final)
  if aside.exists():
    shutil.rmtree(aside)


def carry_over(final: Path, new: Path, manifest: dict, produced: set[str]) -> None:
  """Moves what the old version dir `final` holds besides the converter's output into `new`:
  the tokenizer (see the module docstring) and earlier replaced tokenizers. Anything else there
  is named in a warning: it goes with the old dataset."""
  if not final.is_dir():
    return
  old = _manifest(final)
  if (final / REPLACED).is_dir():
    shutil.copytree(final / REPLACED, new / REPLACED)
    manifest["replaced_tokenizers"] = list(old.get("replaced_tokenizers", []))
  entry = old.get("tokenizer") or {"file": TOKENIZER}
  tokenizer = final / entry["file"]
  if tokenizer.is_file():
    if _train_shards(old) == _train_shards(manifest):
      shutil.copy2(tokenizer, new / entry["file"])
      manifest["tokenizer"] = entry
      log.info("%s: train split unchanged, tokenizer kept", final)
    else:
      sha = hashlib.sha256(tokenizer.read_bytes()).hexdigest()
      kept = Path(REPLACED) / f"tokenizer-{sha[:16]}.model"
      (new / REPLACED).mkdir(exist_ok=True)
      shutil.copy2(tokenizer, new / kept)
      manifest.setdefault("replaced_tokenizers", []).append(
          {**entry, "file": str(kept), "sha256": sha})
      log.warning("%s: the train split changed, so its tokenizer no longer describes it: kept "
                  "as %s, not used; train a new one with medjax-prepare tokenizer", final, kept)
  known = produced | {entry["file"], REPLACED, "manifest.json"}
  other = sorted(p.name for p in final.iterdir() if p.name not in known)
  if other:
    log.warning("%s: files the converter did not write are not carried over: %s", final, other)


def _manifest(version_dir: Path) -> dict:
  try:
    return json.loads((version_dir / "manifest.json").read_text())
  except (OSError, ValueError):
    return {}


def _train_shards(manifest: dict):
  return manifest.get("splits", {}).get("train", {}).get("shards")
