import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from medjax import sharding


def test_mesh_fills_minus_one_and_checks_counts():
  mesh = sharding.make_mesh({"data": 2, "fsdp": -1, "tensor": 1})
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  with pytest.raises(ValueError, match="needs 6 devices"):
    sharding.make_mesh({"data": 2, "fsdp": 3, "tensor": 1})
  with pytest.raises(ValueError, match="Only one"):
    sharding.make_mesh({"data": -1, "fsdp": -1})


def test_logical_rules():
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  assert sharding.logical_to_mesh_spec(("embed", "mlp"), (8, 8), mesh) == P("fsdp", "tensor")
  assert sharding.logical_to_mesh_spec(("batch", None), (8, 3), mesh) == P(("data", "fsdp"), None)
  # A dimension that does not divide stays replicated rather than failing at placement.
  assert sharding.logical_to_mesh_spec(("embed", "mlp"), (5, 8), mesh) == P(None, "tensor")
  # Size-1 mesh axes are dropped: the spec says what really splits.
  one = sharding.make_mesh({"data": -1}, jax.devices()[:1])
  assert sharding.logical_to_mesh_spec(("embed", "mlp"), (8, 8), one) == P(None, None)
  with pytest.raises(KeyError, match="embd"):
    sharding.logical_to_mesh_spec(("embd",))


def test_per_device_bytes():
  mesh = sharding.make_mesh({"data": 1, "fsdp": 8, "tensor": 1})
  x = jax.ShapeDtypeStruct((64, 32), np.float32)
  specs = {"w": P("embed", "mlp")}
  shardings = sharding.param_shardings({"w": x}, specs, mesh)
  assert sharding.per_device_bytes({"w": x}, shardings) == 64 * 32 * 4 // 8
