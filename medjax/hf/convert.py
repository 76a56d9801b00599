"""Tensors between medjax's named tower params and a Hugging Face state dict (numpy only).

Names follow the tables of `medjax.hf.names`; medjax names are those of `named_params.to_named`
on one tower (`blocks.layers.3.mlp.up.kernel`). Every mismatch raises a ValueError naming the
keys: HF tensors the table does not use, medjax params it does not fill, shapes that differ.
"""
from __future__ import annotations

import numpy as np

from medjax.hf.names import Arch
from medjax.models.vit import cubic_resize_matrix

_KERNEL_KINDS = ("linear", "qkv", "out", "conv")


def rows(arch: Arch, depth: int) -> list[tuple[str, str, str]]:
  """Every (medjax name, HF name, tensor kind) of a tower of `depth` blocks. A module's kernel
  takes the module's kind, its bias "qkv_bias" (attention inputs) or "same", LayerNorm params
  "same"; single tensors keep their kind."""
  modules = list(arch.top.items())
  for i in range(depth):
    prefix = arch.blocks.format(i=i)
    modules += [(f"blocks.layers.{i}.{m}", (f"{prefix}.{h}", kind))
                for m, (h, kind) in arch.block.items()]
  out = []
  for medjax, (hf, kind) in modules:
    if kind == "norm":
      out += [(f"{medjax}.scale", f"{hf}.weight", "same"), (f"{medjax}.bias", f"{hf}.bias", "same")]
    elif kind in _KERNEL_KINDS:
      bias = "qkv_bias" if kind == "qkv" else "same"
      out += [(f"{medjax}.kernel", f"{hf}.weight", kind), (f"{medjax}.bias", f"{hf}.bias", bias)]
    else:
      out.append((medjax, hf, kind))
  return out


def _resized_grid(table: np.ndarray, grid: int) -> np.ndarray:
  """[n * n, width] -> [grid * grid, width], bicubic as PyTorch (and HF at run time)."""
  n = int(round(np.sqrt(table.shape[0])))
  if n * n != table.shape[0]:
    raise ValueError(f"position table of {table.shape[0]} rows is not a square patch grid")
  if n == grid:
    return table
  weights = cubic_resize_matrix(n, grid)
  return np.einsum("ri,cj,ijd->rcd", weights, weights, table.reshape(n, n, -1)).reshape(
      grid * grid, -1)


def to_medjax(kind: str, hf: np.ndarray, like: tuple[int, ...], state: dict,
              arch: Arch) -> tuple[np.ndarray, list[str]]:
  """One medjax tensor of shape `like` from HF tensor `hf` (and, for combined kinds, others of
  `state`); returns it with the extra HF names it read."""
  if kind == "linear":
    return hf.T, []
  if kind == "qkv":  # [heads * head_dim, embed] -> [embed, heads, head_dim]
    return hf.T.reshape(like), []
  if kind == "qkv_bias":
    return hf.reshape(like), []
  if kind == "out":  # [embed, heads * head_dim] -> [heads, head_dim, embed]
    return hf.T.reshape(like), []
  if kind == "conv":  # [width, C, p, p] -> [p * p * C, width]
    width, channels, p, _ = hf.shape
    wanted = like[0] // (p * p)
    if channels != wanted and wanted == 1:
      hf = hf.sum(axis=1, keepdims=True)
    return hf.transpose(2, 3, 1, 0).reshape(-1, width), []
  if kind == "class":  # [1, 1, width] + the class slot of the position table
    table = "embeddings.position_embeddings"
    return hf.reshape(-1) + state[table].reshape(-1, hf.shape[-1])[0], [table]
  if kind == "grid":
    table = hf.reshape(-1, hf.shape[-1])
    table = table[1:] if arch.options.get("class_token") else table
    return _resized_grid(table, int(round(np.sqrt(like[0])))), []
  if kind == "text_pos":
    types = "embeddings.token_type_embeddings.weight"
    return hf + state[types][0], [types]
  if kind == "same":
    return hf.reshape(like) if hf.size == np.prod(like) else hf, []
  raise ValueError(f"unknown tensor kind {kind!r}")


def to_hf(kind: str, value: np.ndarray, patch_size: int) -> np.ndarray:
  """The HF tensor of a medjax one (the position kinds: the table as medjax uses it)."""
  if kind == "linear":
    return value.T
  if kind == "qkv":  # [embed, heads, head_dim] -> [heads * head_dim, embed]
    return value.reshape(value.shape[0], -1).T
  if kind == "out":  # [heads, head_dim, embed] -> [embed, heads * head_dim]
    return value.reshape(-1, value.shape[-1]).T
  if kind == "qkv_bias":
    return value.reshape(-1)
  if kind == "conv":  # [p * p * C, width] -> [width, C, p, p]
    p = patch_size
    return value.reshape(p, p, -1, value.shape[-1]).transpose(3, 2, 0, 1)
  if kind in ("same", "grid", "text_pos"):
    return value
  raise ValueError(f"tensor kind {kind!r} has no export")


def tower_from_hf(arch: Arch, state: dict[str, np.ndarray], expected: dict[str, tuple],
                  depth: int, where: str) -> dict[str, np.ndarray]:
  """HF state dict -> {medjax name: array} for exactly the names (and shapes) of `expected`."""
  out, used = {}, set(arch.ignored)
  table = rows(arch, depth)
  problems = [f"medjax param {n} has no HF counterpart"
              for n in sorted(set(expected) - {m for m, _, _ in table})]
  for medjax, hf, kind in table:
    if hf not in state:
      problems.append(f"HF tensor {hf} (for medjax {medjax}) is missing")
      continue
    if medjax not in expected:
      problems.append(f"HF tensor {hf} has no medjax param {medjax}: the tower options differ")
      continue
    try:
      value, extra = to_medjax(kind, state[hf], expected[medjax], state, arch)
    except (ValueError, KeyError) as e:  # a layout that cannot be read as medjax's
      problems.append(f"{hf} {tuple(state[hf].shape)} -> medjax {medjax} "
                      f"{tuple(expected[medjax])}: {e}")
      continue
    used |= {hf, *extra}
    if tuple(value.shape) != tuple(expected[medjax]):
      problems.append(f"{hf} {tuple(state[hf].shape)} -> medjax {medjax} "
                      f"{tuple(value.shape)}, the model needs {tuple(expected[medjax])}")
      continue
    out[medjax] = np.asarray(value, np.float32)
  problems += [f"HF tensor {n} is not used by medjax" for n in sorted(set(state) - used)]
  if problems:
    shown = "\n  ".join(problems[:12])
    more = f"\n  ... and {len(problems) - 12} more" if len(problems) > 12 else ""
    raise ValueError(f"{where}: the HF model does not fit medjax's {arch.tower} tower "
                     f"({len(problems)} problems):\n  {shown}{more}")
  return out
