"""What the evaluators share: model outputs for host arrays, computed on the training mesh with
the training params (sharded, on any number of processes), returned to every process."""
from __future__ import annotations

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P


class Outputs:
  """`__call__(params, inputs)`: `fn(model, inputs) -> {name: array}` for a dict of host arrays
  (the same on every process), in fixed-size chunks (one compile; the last chunk padded with
  zeros), as numpy arrays on every process."""

  def __init__(self, ts, mesh, fn, chunk: int):
    self.mesh, self.chunk = mesh, int(chunk)
    replicated = NamedSharding(mesh, P())
    self._replicated = replicated
    self._fn = jax.jit(lambda params, inputs: fn(nnx.merge(ts.graphdef, params), inputs),
                       in_shardings=(ts.shardings["params"], replicated),
                       out_shardings=replicated)

  def __call__(self, params, inputs: dict) -> dict:
    n = len(next(iter(inputs.values())))
    parts = []
    with jax.set_mesh(self.mesh):
      for i in range(0, n, self.chunk):
        part = {k: _pad(v[i:i + self.chunk], self.chunk) for k, v in inputs.items()}
        part = {k: jax.make_array_from_process_local_data(self._replicated, v)
                for k, v in part.items()}
        parts.append(jax.device_get(self._fn(params, part)))
    return {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}


def _pad(x: np.ndarray, size: int) -> np.ndarray:
  if len(x) == size:
    return x
  return np.concatenate([x, np.zeros((size - len(x), *x.shape[1:]), x.dtype)])
