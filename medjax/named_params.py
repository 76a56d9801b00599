"""Params as flat names, one tensor per layer: the layout of exported weights.

Nested params -> {"image.blocks.layers.3.mlp.up.kernel": array, ...}: a scanned tower's stacked
blocks (leading `layers` axis) are split into one tensor per layer, as PyTorch / Hugging Face
checkpoints are; every other leaf keeps its path. `from_named` restacks them and names what does
not fit. Used by export and by checkpoint loading (init_from an export).
"""
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.sharding import PartitionSpec as P


def _stacked(spec) -> bool:
  """True for a leaf of a scanned tower: its leading axis is the `layers` one."""
  return isinstance(spec, P) and len(spec) > 0 and spec[0] == "layers"


def _layer_names(path: tuple, depth: int) -> list[str]:
  """(image, blocks, layers, mlp, up, kernel) -> image.blocks.layers.<i>.mlp.up.kernel, i < depth"""
  at = path.index("layers") + 1
  return [_name(path[:at] + (i,) + path[at:]) for i in range(depth)]


def _name(path: tuple) -> str:
  return ".".join(map(str, path))


def to_named(params, logical_specs) -> dict[str, np.ndarray]:
  """Nested params -> flat {name: array}, stacked blocks split into `<path>.<i>` per layer."""
  specs = traverse_util.flatten_dict(logical_specs)
  named = {}
  for path, value in traverse_util.flatten_dict(params).items():
    value = np.asarray(value)
    if _stacked(specs[path]):
      for name, layer in zip(_layer_names(path, len(value)), value):
        named[name] = np.ascontiguousarray(layer)
    else:
      named[_name(path)] = value
  return named


def named_shapes(abstract_params, logical_specs) -> dict[str, tuple[int, ...]]:
  """The names `to_named` gives params of these (abstract) shapes, each with its shape."""
  specs = traverse_util.flatten_dict(logical_specs)
  out = {}
  for path, like in traverse_util.flatten_dict(abstract_params).items():
    if _stacked(specs[path]):
      out.update(dict.fromkeys(_layer_names(path, like.shape[0]), tuple(like.shape[1:])))
    else:
      out[_name(path)] = tuple(like.shape)
  return out


def from_named(named: dict, abstract_params, logical_specs):
  """The inverse of `to_named` (jnp.stack, so it also runs inside a traced function). A missing
  or extra name, or a shape that differs, raises a ValueError naming it."""
  specs = traverse_util.flatten_dict(logical_specs)
  used, flat = set(), {}
  for path, like in traverse_util.flatten_dict(abstract_params).items():
    if _stacked(specs[path]):
      names = _layer_names(path, like.shape[0])
    else:
      names = [_name(path)]
    missing = [n for n in names if n not in named]
    if missing:
      raise ValueError(f"weights lack {missing[0]} (and {len(missing) - 1} more of {path})")
    parts = [named[n] for n in names]
    value = jnp.stack(parts) if _stacked(specs[path]) else parts[0]
    if value.shape != like.shape:
      raise ValueError(f"weights {names[0]}: shape {value.shape}, the model needs {like.shape}")
    flat[path], used = value, used | set(names)
  extra = sorted(set(named) - used)
  if extra:
    raise ValueError(f"weights have {len(extra)} names the model does not, e.g. {extra[0]}")
  return traverse_util.unflatten_dict(flat)
