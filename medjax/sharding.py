"""Device mesh, logical axis rules, and shardings derived from abstract pytrees.

Every parameter names its dimensions with logical axes (``embed``, ``mlp``, ``heads``...). The
table ``LOGICAL_AXIS_RULES`` is the one place that says which mesh axis each name is split over;
change it (or pass ``config.sharding_rules``) to change the parallelism strategy.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axis (or tuple of axes, or None = replicated).
# Parameters are split over `fsdp` along `embed` (ZeRO-3 style) and over `tensor` along the
# wide dimensions (Megatron style). Activations keep their batch split over data x fsdp.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # parameters
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("layers", None),  # the stacked-blocks axis of a scanned tower: each device has every layer
    ("vocab", "tensor"),
    ("patch", None),  # flattened patch pixels, the ViT stem's input dimension
    ("length", None),  # positions of a learned position table
    ("proj", None),  # shared embedding space of the projection heads
    ("prototypes", "tensor"),  # the DINO / iBOT heads' prototypes (tens of thousands)
    # activations
    ("batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("act_vocab", "tensor"),
)


def make_mesh(shape: dict[str, int],
              devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """Builds a (data, fsdp, tensor) mesh; one axis may be -1 to take the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = [int(shape.get(name, 1)) for name in MESH_AXES]
  unknown = [i for i, s in enumerate(sizes) if s == -1]
  if len(unknown) > 1:
    raise ValueError(f"Only one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if unknown:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices do not divide into mesh "
                       f"{dict(zip(MESH_AXES, sizes))}")
    sizes[unknown[0]] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(
        f"Mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, have {len(devices)}")
  # Auto axes: XLA propagates shardings from the annotated inputs, outputs and constraints.
  return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def logical_to_mesh_spec(logical: Sequence[str | None], shape: Sequence[int] | None = None,
                         mesh: jax.sharding.Mesh | None = None,
                         rules=LOGICAL_AXIS_RULES) -> P:
  """Maps logical axis names to a mesh PartitionSpec.

  With ``shape`` and ``mesh``, a dimension that does not divide by its mesh axes stays
  replicated (logged), and a mesh axis is used at most once per array.
  """
  table = dict(rules)
  used: set[str] = set()
  out = []
  for i, name in enumerate(logical):
    axes = table.get(name) if name is not None else None
    if name is not None and name not in table:
      raise KeyError(f"Logical axis {name!r} has no rule; known: {sorted(table)}")
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    axes = tuple(a for a in axes if a not in used)
    if mesh is not None:
      axes = tuple(a for a in axes if mesh.shape[a] > 1)
    if axes and shape is not None and mesh is not None:
      size = math.prod(mesh.shape[a] for a in axes)
      if shape[i] % size:
        logging.info("Dim %d (%s, size %d) does not divide by %s=%d: replicated.", i, name,
                     shape[i], axes, size)
        axes = ()
    used.update(axes)
    out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
  return P(*out)


def param_shardings(abstract_params, logical_specs, mesh, rules=LOGICAL_AXIS_RULES):
  """NamedShardings for a params pytree, from its abstract shapes and logical PartitionSpecs."""
  def one(x, spec):
    return NamedSharding(mesh, logical_to_mesh_spec(tuple(spec), x.shape, mesh, rules))
  return jax.tree.map(one, abstract_params, logical_specs,
                      is_leaf=lambda s: isinstance(s, P))


def batch_sharding(mesh) -> NamedSharding:
  """Leading (batch) dimension split over data x fsdp; the rest replicated."""
  return NamedSharding(mesh, logical_to_mesh_spec(("batch",), mesh=mesh))


def constrain(x: jax.Array, logical: Sequence[str | None]) -> jax.Array:
  """Sharding constraint on an activation, by logical names; a no-op outside a mesh context."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_mesh_spec(logical, x.shape, mesh))


def per_device_bytes(abstract_tree, shardings) -> int:
  """Bytes one device holds of a pytree placed with ``shardings`` (the largest shard)."""
  total = 0
  for x, s in zip(jax.tree.leaves(abstract_tree), jax.tree.leaves(shardings)):
    total += math.prod(s.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
  return total
