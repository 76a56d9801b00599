"""Params from elsewhere: another run's checkpoint, a step directory, or exported weights.

What `config.init_from`, the evaluations and the exports load. Everything loaded is checked
before it is used, each problem naming the tensor: names and shapes must fit the model, dtypes
must convert without loss (float16 or int32 weights for a float32 model are an error unless the
caller allows the cast), and every value must be finite (a NaN tower would otherwise surface
steps later as a "non-finite loss").
"""
from __future__ import annotations

import jax
import numpy as np
import orbax.checkpoint as ocp
import safetensors.numpy

from medjax import named_params, paths, sharding
from medjax.train import checkpoint, state as state_lib


def load_params(path, abstract_params, logical_specs, *, allow_cast: bool = False):
  """Params only (no optimizer state, no data position) from `path`: a run's workdir (its newest
  complete step), one step directory, or an export (`medjax-export`: the directory or its
  model.safetensors). `logical_specs` restacks an export's per-layer tensors."""
  path = paths.path(path)
  weights = path if path.name.endswith(".safetensors") else path / "model.safetensors"
  if weights.exists():
    named = safetensors.numpy.load(weights.read_bytes())
    params = named_params.from_named(named, abstract_params, logical_specs)
    where = lambda k: f"{weights}: {k}"
  else:
    params, where = _from_checkpoint(path, abstract_params)
  flat = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(params)}
  want = {jax.tree_util.keystr(p): a for p, a in
          jax.tree_util.tree_leaves_with_path(abstract_params)}
  for key, value in flat.items():
    _check_tensor(where(key), np.asarray(value), want[key].dtype, allow_cast)
  return jax.tree.map(lambda v, a: jax.device_put(np.asarray(v, a.dtype), a.sharding),
                      params, abstract_params)


def _from_checkpoint(path, abstract_params):
  ckpt_dir = path / "checkpoints"
  if ckpt_dir.is_dir():
    with ocp.CheckpointManager(ckpt_dir, item_names=("state", "meta")) as mgr:
      if mgr.latest_step() is None:
        raise FileNotFoundError(f"init_from={path}: no complete checkpoint in {ckpt_dir}")
      path = ckpt_dir / str(mgr.latest_step())
  state_dir = path / "state"
  if not state_dir.is_dir():
    raise FileNotFoundError(f"init_from={path}: not a medjax workdir, checkpoint step dir or "
                            "export (no checkpoints/, state/ or model.safetensors)")
  with ocp.PyTreeCheckpointer() as ckptr:
    saved = ckptr.metadata(state_dir).item_metadata["params"]
    checkpoint.check_shapes(saved, abstract_params, str(path))
    # Restored as saved (no cast by Orbax), so the dtype check below sees what is on disk.
    target = {"params": jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), saved)}
    params = ckptr.restore(state_dir, args=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True))["params"]
  return params, lambda k: f"{path}: {k}"


def _check_tensor(where: str, value: np.ndarray, dtype, allow_cast: bool) -> None:
  dtype = np.dtype(dtype)
  if value.dtype != dtype and not allow_cast:
    lossless = np.can_cast(value.dtype, dtype, casting="safe") and value.dtype.kind == dtype.kind
    if not lossless:
      raise ValueError(f"{where} is {value.dtype}, the model needs {dtype}: converting could "
                       "lose information; convert the weights, or allow it "
                       "(--config.init_from_cast=True)")
  if value.dtype.kind in "fc" and not np.isfinite(value).all():
    bad = int((~np.isfinite(value)).sum())
    raise ValueError(f"{where} has {bad} non-finite values (NaN or inf) of {value.size}: these "
                     "weights are broken; load another checkpoint")


def load_model(config, path="", ts=None):
  """(TrainSetup on one device, params) for evaluations and exports: `path`'s params (as
  `load_params`) or, when `path` is empty, a random init of `config.seed`. Pass `ts` to reuse
  one setup for several towers of one config."""
  ts = ts or state_lib.setup(config, sharding.make_mesh(dict(data=1), jax.devices()[:1]))
  if path:
    return ts, load_params(path, ts.abstract_state["params"], ts.logical_specs,
                           allow_cast=bool(config.get("init_from_cast", False)))
  return ts, state_lib.init(config, ts)["params"]
