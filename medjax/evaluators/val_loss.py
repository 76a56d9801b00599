"""Validation loss of each objective the current stage trains: the same objectives, on batches
of the sources' validation split, made the way training batches are (augmented views, masks),
the same `batches` batches at every evaluation (a fixed seed), so the curve is comparable."""
from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from medjax import objectives, sharding
from medjax.data import pipeline
from medjax.train import stages, step as step_lib


class Evaluator:

  def __init__(self, name, config, mesh, ts, *, batches: int = 4, split: str = "validation"):
    self.name, self.config, self.mesh, self.ts = name, config, mesh, ts
    self.batches, self.split = int(batches), split
    self._data = {}  # stage sources -> the global batches (read once)
    self._fns = {}  # stage name -> jitted loss

  def _batches(self, stage) -> list:
    key = repr(stage.sources)
    if key not in self._data:
      data_cfg = stages.data_config(self.config.data, stage)
      it = pipeline.make_iterator(data_cfg, batch_size=self.config.batch_size, split=self.split,
                                  seed=self.config.seed)
      put = sharding.batch_sharding(self.mesh)
      try:
        self._data[key] = [jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(put, x), next(it))
                           for _ in range(self.batches)]
      finally:
        it.close()
    return self._data[key]

  def _fn(self, stage):
    if stage.name not in self._fns:
      graphdef, cfg = self.ts.graphdef, stage.objectives

      def losses(state, batch):
        model = nnx.merge(graphdef, state["params"])
        # What the train step gives the objectives too: the teacher's outputs, the objectives'
        # states (DINO's centre), the stage step (temperature schedules).
        inputs, _, _ = step_lib.stage_inputs(self.ts, stage, state, batch)
        outputs = dict(model(batch, needs=objectives.needs(cfg)), **inputs)
        _, metrics = objectives.total_loss(outputs, batch, cfg)
        return {k: v for k, v in metrics.items() if k.endswith("/loss")}

      self._fns[stage.name] = jax.jit(losses, in_shardings=(
          self.ts.shardings, sharding.batch_sharding(self.mesh)))
    return self._fns[stage.name]

  def run(self, state, stage) -> dict:
    fn = self._fn(stage)
    with jax.set_mesh(self.mesh):
      values = [jax.device_get(fn(state, batch)) for batch in self._batches(stage)]
    return {f"{self.name}/{k}": float(np.mean([v[k] for v in values])) for k in values[0]}
