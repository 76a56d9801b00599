"""Orbax checkpoints of a run: one step directory holds the train state and a JSON `meta` item
(config, fingerprints of the tokenizer and data manifests, the data position).

Orbax writes a step into a temporary directory and renames it when complete, so a save that
fails (full disk) or is killed (SIGKILL, a lost host) never becomes the step a run resumes from.
The data position needs no iterator state: batch k of a stream is a pure function of (data,
seed, k) on any number of processes (medjax.data.pipeline), so the step says where the stream
goes on, and a checkpoint saved by N processes resumes on M. Arrays are read back with
tensorstore into the target shardings (any mesh); nothing is pickled.
"""
from __future__ import annotations

import errno
import json
import time

import jax
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util
from jax.experimental import multihost_utils

from medjax import paths
from medjax.configs.resolve import MAY_DIFFER_ON_RESUME, TOWER_OPTIONS
from medjax.train import preemption


class IncompatibleRun(ValueError):
  """The workdir holds a run of another config or data: never resumed, never skipped."""


def manager(workdir, config) -> ocp.CheckpointManager:
  """The run's CheckpointManager on `workdir`/checkpoints (a local path or a cloud URL)."""
  directory = paths.path(workdir) / "checkpoints"
  if not paths.is_url(directory):
    try:
      directory.mkdir(parents=True, exist_ok=True)
      probe = directory / ".writable"
      probe.write_text("ok")
      probe.unlink()
    except OSError as e:
      raise OSError(e.errno, f"Checkpoint directory {directory} is not writable: "
                             f"{e.strerror}") from e
  options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints,
                                         enable_async_checkpointing=True)
  return ocp.CheckpointManager(directory, options=options, item_handlers=_handlers())


def _handlers() -> dict:
  # Named up front so metadata can be read before anything was saved or restored.
  return dict(state=ocp.StandardCheckpointHandler(), meta=ocp.JsonCheckpointHandler())


def save(mgr: ocp.CheckpointManager, step: int, state, meta: dict) -> None:
  """Starts an async save; blocks only while the arrays are copied off the devices. An earlier
  async save that failed is reported here (`_failed`)."""
  _raise_async_error(mgr)
  try:
    mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                           meta=ocp.args.JsonSave(meta)), force=True)
  except Exception as e:
    raise _failed(mgr, e) from e


def finish(mgr: ocp.CheckpointManager, seconds: float) -> None:
  """Waits (at most `seconds`) for the pending async save and reports its failure."""
  preemption.bounded(mgr.wait_until_finished, seconds, "the last checkpoint save")
  _raise_async_error(mgr)


def _raise_async_error(mgr) -> None:
  try:
    mgr.check_for_errors()
  except Exception as e:
    raise _failed(mgr, e) from e


def _failed(mgr, error: Exception) -> OSError:
  """A save error (an OSError, or tensorstore's ValueError carrying the OS error) as an
  OSError a user reads: which directory, whether the disk is full, the first line of the cause.
  The step being saved never becomes a checkpoint: a resume starts from the one before."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  full = getattr(error, "errno", None) == errno.ENOSPC or "No space left" in str(error)
  code = errno.ENOSPC if full else getattr(error, "errno", None) or errno.EIO
  hint = ": the disk is full" if full else ""
  if len(text) > 500:
    text = text[:200] + " ... " + text[-250:]
  return OSError(code, f"Saving a checkpoint to {mgr.directory} failed{hint} ({text}). The "
                       f"newest complete checkpoint is step {mgr.latest_step()}; free space "
                       "and rerun the same command to resume from it.")


def check_compatible(saved_meta: dict, meta: dict, where: str) -> None:
  """Raises IncompatibleRun if the run in `where` was made with another config (every field
  must be equal except MAY_DIFFER_ON_RESUME: how a run runs, not what it learns) or data."""
  old, new = (traverse_util.flatten_dict(c, sep=".")
              for c in (saved_meta.get("config", {}), meta["config"]))
  if old:  # a run saved before the tower options existed has their defaults
    old.update({f"model.{t}.{k}": v for t, options in TOWER_OPTIONS.items()
                for k, v in options.items() if f"model.{t}.{k}" not in old})
  free = lambda k: any(k == f or k.startswith(f + ".") for f in MAY_DIFFER_ON_RESUME)
  diff = sorted(k for k in set(old) | set(new)
                if not free(k) and _norm(old.get(k)) != _norm(new.get(k)))
  if diff:
    lines = "\n".join(f"  {k}: saved {old.get(k)!r}, now {new.get(k)!r}" for k in diff[:10])
    raise IncompatibleRun(f"{where} holds a run of another config; use a new --workdir, or "
                          f"--config.init_from to start from its params. Differences:\n{lines}")
  for key in ("tokenizer_sha256", "data_sha256"):
    if saved_meta.get(key) != meta.get(key):
      raise IncompatibleRun(f"{where} was trained with other data ({key} "
                            f"{saved_meta.get(key)} != {meta.get(key)}); resuming would "
                            "silently change the stream.")


def _norm(value):
  return json.loads(json.dumps(value))  # as saved: tuples, also nested ones, become lists


def check_shapes(saved, target, where: str) -> None:
  """Clear error for saved arrays that do not fit the model (before Orbax's own)."""
  saved = {jax.tree_util.keystr(p): tuple(x.shape)
           for p, x in jax.tree_util.tree_leaves_with_path(saved) if hasattr(x, "shape")}
  target = {jax.tree_util.keystr(p): tuple(x.shape)
            for p, x in jax.tree_util.tree_leaves_with_path(target)}
  bad = [f"  {k}: checkpoint {saved.get(k)}, model {target[k]}"
         for k in target if saved.get(k) != target[k]]
  if bad:
    raise ValueError(f"{where} does not fit this model ({len(bad)} arrays differ):\n" +
                     "\n".join(bad[:10]))


def restore_latest(mgr: ocp.CheckpointManager, abstract_state, meta: dict):
  """(state, step, saved meta) of the newest step that restores, placed with `abstract_state`'s
  shardings (so a run can resume on another mesh), or (None, 0, None) with no checkpoint.

  A newest step that is corrupt or incomplete (unreadable meta, missing or damaged arrays) is
  skipped for the one before it, with a warning naming the step, the file and the error, and
  moved aside (renamed `<step>.unreadable-<time>`, kept for inspection) so the resumed run can save
  that step again; a step of another config or data is an error (IncompatibleRun), never
  skipped."""
  broken = []
  for step in sorted(mgr.all_steps(), reverse=True):
    where = f"{mgr.directory}/{step}"
    try:
      saved_meta = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
      if not isinstance(saved_meta, dict) or "config" not in saved_meta:
        raise ValueError(f"{where}/meta holds no run metadata")
      check_compatible(saved_meta, meta, where)
      check_shapes(mgr.item_metadata(step)["state"]["params"], abstract_state["params"], where)
      state = mgr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state)))["state"]
    except (IncompatibleRun, ValueError) as e:
      if isinstance(e, IncompatibleRun) or "does not fit this model" in str(e):
        raise
      broken.append(_skip(where, e, step))
      continue
    except (OSError, KeyError, TypeError, json.JSONDecodeError, RuntimeError) as e:
      broken.append(_skip(where, e, step))
      continue
    _move_aside(mgr, broken)
    return state, step, saved_meta
  _move_aside(mgr, broken)
  return None, 0, None


def _move_aside(mgr, steps) -> None:
  if not steps:
    return
  if jax.process_index() == 0:
    for step in steps:
      src = paths.path(mgr.directory) / str(step)
      dst = src.parent / f"{step}.unreadable-{time.time():.0f}"
      src.rename(dst)
      logging.warning("Moved the unreadable checkpoint %s to %s.", src, dst)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("medjax: unreadable checkpoints moved aside")
  mgr.reload()


def _skip(where: str, error: Exception, step: int) -> int:
  first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
  logging.warning("Checkpoint %s cannot be restored (%s: %s); falling back to the step before "
                  "it.", where, type(error).__name__, first)
  return step
