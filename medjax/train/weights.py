"""Params from elsewhere: another run's checkpoint, a step directory, or exported weights.

What `config.init_from`, the evaluations and the exports load. Everything loaded is checked
before it is used, each problem naming the tensor: names and shapes must fit the model, dtypes
must convert without loss (float16 or int32 weights for a float32 model are an error unless the
caller allows the cast), and every value must be finite (a NaN tower would otherwise surface
steps later as a "non-finite loss").
"""
from __future__ import annotations

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import safetensors.numpy

from medjax import named_params, paths, sharding
from medjax.configs.resolve import HF_PREFIX
from medjax.data import pipeline
from medjax.data.tokenizer import Tokenizer
from medjax.train import checkpoint, state as state_lib


def load_params(path, abstract_params, logical_specs, *, allow_cast: bool = False, config=None,
                params=None):
  """Params only (no optimizer state, no data position) from `path`: a run's workdir (its newest
  complete step), one step directory, or an export (`medjax-export`: the directory or its
  model.safetensors). `logical_specs` restacks an export's per-layer tensors.
  `hf:DIR[,hf:DIR]`: Hugging Face towers put into `params` (the initial ones), checked against
  `config` (medjax/hf/load.py)."""
  if str(path).startswith(HF_PREFIX):
    from medjax.hf import load  # torch and transformers: the hf extra, only when asked for
    return load.towers(str(path), config, params, abstract_params, logical_specs)
  path = paths.path(path)
  weights = _export_weights(path)
  if weights is not None:
    named = safetensors.numpy.load(weights.read_bytes())
    params = named_params.from_named(named, abstract_params, logical_specs)
    where = lambda k: f"{weights}: {k}"
  else:
    params, where = _from_checkpoint(path, abstract_params)
  flat = {_dotted(p): x for p, x in jax.tree_util.tree_leaves_with_path(params)}
  want = {_dotted(p): a for p, a in jax.tree_util.tree_leaves_with_path(abstract_params)}
  for key, value in flat.items():
    _check_tensor(where(key), np.asarray(value), want[key].dtype, allow_cast)
  return jax.tree.map(lambda v, a: jax.device_put(np.asarray(v, a.dtype), a.sharding),
                      params, abstract_params)


def _dotted(key_path) -> str:
  """A tree path as the dotted name exports use ("image.norm.scale"), for error messages."""
  return ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in key_path)


def _export_weights(path):
  """The model.safetensors of an export (its directory or the file itself), else None."""
  weights = path if path.name.endswith(".safetensors") else path / "model.safetensors"
  return weights if weights.exists() else None


def _step_dir(path):
  """A workdir's newest complete step directory, or `path` itself when it is one."""
  ckpt_dir = path / "checkpoints"
  if ckpt_dir.is_dir():
    with ocp.CheckpointManager(ckpt_dir, item_names=("state", "meta")) as mgr:
      if mgr.latest_step() is None:
        raise FileNotFoundError(f"init_from={path}: no complete checkpoint in {ckpt_dir}")
      path = ckpt_dir / str(mgr.latest_step())
  if not (path / "state").is_dir():
    raise FileNotFoundError(f"init_from={path}: not a medjax workdir, checkpoint step dir or "
                            "export (no checkpoints/, state/ or model.safetensors)")
  return path


def _from_checkpoint(path, abstract_params):
  path = _step_dir(path)
  state_dir = path / "state"
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
  if path and not str(path).startswith(HF_PREFIX):
    return ts, load_params(path, ts.abstract_state["params"], ts.logical_specs,
                           allow_cast=bool(config.get("init_from_cast", False)))
  params = state_lib.init(config, ts)["params"]
  if path:  # Hugging Face towers replace their part of the init
    params = load_params(path, ts.abstract_state["params"], ts.logical_specs, config=config,
                         params=params)
  return ts, params


def load_tokenizer(config, path=""):
  """The tokenizer of the model `load_model(config, path)` gives: an export's own
  tokenizer.model; else the config's (data.tokenizer, or the one beside the first source),
  checked against the fingerprint a checkpoint recorded: text ids of another tokenizer would
  mean nothing to the model, silently."""
  if path:
    weights = _export_weights(paths.path(path))
    if weights is not None:
      return Tokenizer((weights.parent / "tokenizer.model").read_bytes())
  tokenizer = pipeline.load_tokenizer(config.data)
  if path:
    meta = _step_dir(paths.path(path)) / "meta" / "metadata"
    saved = json.loads(meta.read_text()).get("tokenizer_sha256")
    if saved and saved != tokenizer.sha256:
      raise ValueError(f"{path} was trained with another tokenizer (sha256 {saved}) than "
                       f"{pipeline.tokenizer_path(config.data)} ({tokenizer.sha256}); set "
                       "--config.data.tokenizer to the run's")
  return tokenizer
