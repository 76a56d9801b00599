"""Orbax checkpoints: one step directory holds the train state, each process's data-iterator
state and a JSON `meta` item (config + fingerprints of the tokenizer and data manifests).

Orbax writes a step into a temporary directory and renames it when complete, so a run killed
mid-save (even with SIGKILL) resumes from the newest complete step. Arrays are read back with
tensorstore into the target shardings (any mesh); nothing is pickled.
"""
import errno
import json
import logging
import os
import signal
import threading

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import safetensors.numpy
from flax import traverse_util
from jax.experimental import multihost_utils

from medjax import named_params, sharding
from medjax.configs.resolve import HF_PREFIX, MAY_DIFFER_ON_RESUME, TOWER_OPTIONS
from medjax.train import state as state_lib


def manager(workdir: str, config) -> ocp.CheckpointManager:
  path = os.path.join(os.path.abspath(workdir), "checkpoints")
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, ".writable")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise OSError(e.errno, f"Checkpoint directory {path} is not writable: {e.strerror}") from e
  options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints,
                                         enable_async_checkpointing=True)
  return ocp.CheckpointManager(path, options=options, item_handlers=_handlers())


def _handlers() -> dict:
  # Named up front so metadata can be read before anything was saved or restored.
  return dict(state=ocp.StandardCheckpointHandler(), data=grain.checkpoint.CheckpointHandler(),
              meta=ocp.JsonCheckpointHandler())


def save(mgr: ocp.CheckpointManager, step: int, state, data_iter, meta: dict) -> None:
  """Starts an async save; blocks only while the arrays are copied off the devices."""
  try:
    mgr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iter),
        meta=ocp.args.JsonSave(meta)), force=True)
  except OSError as e:
    hint = " (disk full)" if e.errno == errno.ENOSPC else ""
    raise OSError(e.errno, f"Saving step {step} to {mgr.directory} failed{hint}: {e}") from e


def check_compatible(saved_meta: dict, meta: dict, where: str) -> None:
  """Raises if the run in `where` was made with another config: every field must be equal
  except those of MAY_DIFFER_ON_RESUME (how a run runs, not what it learns)."""
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
    raise ValueError(f"{where} holds a run of another config; use a new --workdir, or "
                     f"--config.init_from to start from its params. Differences:\n{lines}")
  for key in ("tokenizer_sha256", "data_sha256"):
    if saved_meta.get(key) != meta.get(key):
      raise ValueError(f"{where} was trained with other data ({key} {saved_meta.get(key)} != "
                       f"{meta.get(key)}); resuming would silently change the stream.")


def _norm(value):
  return json.loads(json.dumps(value))  # as saved: tuples, also nested ones, become lists


def _check_shapes(saved, target, where: str) -> None:
  """Clear error for a checkpoint whose arrays do not fit the model (before Orbax's own)."""
  saved = {jax.tree_util.keystr(p): tuple(x.shape)
           for p, x in jax.tree_util.tree_leaves_with_path(saved) if hasattr(x, "shape")}
  target = {jax.tree_util.keystr(p): tuple(x.shape)
            for p, x in jax.tree_util.tree_leaves_with_path(target)}
  bad = [f"  {k}: checkpoint {saved.get(k)}, model {target[k]}"
         for k in target if saved.get(k) != target[k]]
  if bad:
    raise ValueError(f"{where} does not fit this model ({len(bad)} arrays differ):\n" +
                     "\n".join(bad[:10]))


def restore_latest(mgr: ocp.CheckpointManager, abstract_state, data_iter, meta: dict):
  """(state, step) of the newest complete checkpoint, placed with `abstract_state`'s shardings
  (so a run can resume on another mesh); `data_iter` moves to where that step left off (None:
  the data position is not read). (None, 0) when the workdir has no checkpoint."""
  step = mgr.latest_step()
  if step is None:
    return None, 0
  where = f"{mgr.directory}/{step}"
  saved_meta = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  check_compatible(saved_meta, meta, where)
  _check_shapes(mgr.item_metadata(step)["state"]["params"], abstract_state["params"], where)
  items = dict(state=ocp.args.StandardRestore(abstract_state))
  if data_iter is not None:
    items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
  restored = mgr.restore(step, args=ocp.args.Composite(**items))
  return restored["state"], step


def load_params(path: str, abstract_params, logical_specs, *, config=None, params=None):
  """Params only: the start of fine-tuning or of a new stage; optimizer state and data position
  are not read. `path` is another run's workdir (its newest step), one step directory, or
  exported weights (`medjax-export`: the export directory or its model.safetensors), which a
  run elsewhere may have handed over; `logical_specs` restacks their per-layer tensors.
  `hf:DIR[,hf:DIR]`: Hugging Face towers into `params` (the initial ones), checked against
  `config` (medjax/hf/load.py)."""
  if path.startswith(HF_PREFIX):
    from medjax.hf import load  # torch and transformers: the hf extra, only when asked for
    return load.towers(path, config, params, abstract_params, logical_specs)
  path = os.path.abspath(path)
  weights = path if path.endswith(".safetensors") else os.path.join(path, "model.safetensors")
  if os.path.isfile(weights):
    params = named_params.from_named(safetensors.numpy.load_file(weights), abstract_params,
                               logical_specs)
    return jax.tree.map(lambda v, a: jax.device_put(np.asarray(v, a.dtype), a.sharding),
                        params, abstract_params)
  ckpt_dir = os.path.join(path, "checkpoints")
  if os.path.isdir(ckpt_dir):
    with ocp.CheckpointManager(ckpt_dir, item_handlers=_handlers()) as mgr:
      if mgr.latest_step() is None:
        raise FileNotFoundError(f"init_from={path}: no complete checkpoint in {ckpt_dir}")
      path = os.path.join(ckpt_dir, str(mgr.latest_step()))
  state_dir = os.path.join(path, "state")
  if not os.path.isdir(state_dir):
    raise FileNotFoundError(f"init_from={path}: not a medjax workdir, checkpoint step dir or "
                            "export")
  target = {"params": abstract_params}
  with ocp.PyTreeCheckpointer() as ckptr:
    _check_shapes(ckptr.metadata(state_dir).item_metadata["params"], abstract_params, path)
    return ckptr.restore(state_dir, args=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True))["params"]


def load_model(config, path: str = "", ts=None):
  """(TrainSetup on one device, params) for evaluations and exports: `path`'s params (a workdir,
  step directory or export, as `load_params`) or, when `path` is empty, a random init of
  `config.seed`. Pass `ts` to reuse one setup for several towers of a config."""
  ts = ts or state_lib.setup(config, sharding.make_mesh(dict(data=1), jax.devices()[:1]))
  if path and not path.startswith(HF_PREFIX):
    return ts, load_params(path, ts.abstract_state["params"], ts.logical_specs)
  params = state_lib.init(config, ts)["params"]
  if path:  # Hugging Face towers replace their part of the init
    params = load_params(path, ts.abstract_state["params"], ts.logical_specs, config=config,
                         params=params)
  return ts, params


class Preemption:
  """SIGTERM (the preemption notice of TPU VMs, Kubernetes, Slurm) -> save at the next step
  boundary and exit cleanly. On several hosts the flag is agreed on, so all save together."""

  def __init__(self):
    self._flag = threading.Event()
    self._previous = signal.signal(signal.SIGTERM, lambda *_: self._flag.set())

  def requested(self, step: int, every: int) -> bool:
    if jax.process_count() == 1:
      return self._flag.is_set()
    if step % every:  # a cross-host agreement is a sync point: not every step
      return False
    return bool(multihost_utils.process_allgather(self._flag.is_set()).any())

  def close(self):
    signal.signal(signal.SIGTERM, self._previous)
    if self._flag.is_set():
      logging.warning("Stopped on SIGTERM after saving; rerun the same command to resume.")
