"""Device prefetch: the same batches, already on the devices, and an exact data position."""
import grain
import jax
import numpy as np
import pytest
from etils import epath
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from medjax import sharding
from medjax.data import prefetch


def _grain_iterator(n=7):
  """A Grain iterator of the kind the pipeline builds: batches of rows, threads reading ahead."""
  ds = grain.MapDataset.range(8 * n).map(lambda i: np.full((3,), i, np.float32)).batch(8)
  return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2)))


@pytest.fixture(scope="module")
def put():
  mesh = sharding.make_mesh({"data": -1})
  target = NamedSharding(mesh, P("data"))
  calls = []

  def put(batch):
    calls.append(batch)
    return jax.device_put(batch, target)

  put.calls = calls
  put.sharding = target
  return put


def test_same_batches_on_the_devices_read_ahead(put):
  want = list(_grain_iterator())
  put.calls.clear()
  batches = prefetch.ToDevice(_grain_iterator(), put, size=2)
  first = next(batches)
  assert isinstance(first, jax.Array) and first.sharding == put.sharding
  assert len(put.calls) == 3  # the batch handed out and two ahead
  got = [first, *batches]
  assert len(got) == len(want)
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a, b)


def test_state_is_that_of_the_last_batch_handed_out(put, tmp_path):
  want = list(_grain_iterator())
  batches = prefetch.ToDevice(_grain_iterator(), put, size=2)
  for _ in range(3):
    next(batches)
  # Through Grain's own checkpoint handler, as the trainer's checkpoints save data iterators.
  handler = grain.checkpoint.CheckpointHandler()
  handler.save(epath.Path(tmp_path), batches)
  resumed = prefetch.ToDevice(_grain_iterator(), put, size=2)
  handler.restore(epath.Path(tmp_path), resumed)
  rest = list(resumed)
  assert len(rest) == len(want) - 3
  for a, b in zip(rest, want[3:]):
    np.testing.assert_array_equal(a, b)
