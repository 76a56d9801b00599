"""Ahead-of-time compilation of the train step for any mesh, without data or weights.

Catches out-of-memory and sharding mistakes of large configs on a machine that could never run
them: everything is abstract (ShapeDtypeStruct) up to XLA's compiled program.
"""
import math
import time

import jax
import numpy as np

from medjax import contract, sharding
from medjax.configs import resolve
from medjax.data import tasks
from medjax.train import metrics, stages, state as state_lib, step as step_lib


def abstract_batch(config, batch_sharding=None) -> dict:
  """The global batch the input pipeline yields for a resolved `config`, as ShapeDtypeStructs."""
  specs = contract.batch_specs(config.data)
  return {k: jax.ShapeDtypeStruct((config.batch_size, *shape), dtype, sharding=batch_sharding)
          for k, (shape, dtype) in specs.items()}


def synthetic_batch(config, batch_sharding) -> dict:
  """Random arrays of `abstract_batch`'s shapes, placed on the mesh (for benchmarks)."""
  rng = np.random.default_rng(0)
  out = {}
  for name, spec in abstract_batch(config).items():
    if name == "ibot_patches":  # valid patch indices, as the pipeline draws them
      d = config.data
      rows = [tasks.hidden_patches(rng, (d.image_size // d.patch_size) ** 2, spec.shape[-1],
                                   d.ibot_mask_probability, d.ibot_mask_ratio)
              for _ in range(math.prod(spec.shape[:-1]))]
      x = np.stack(rows).reshape(spec.shape)
    elif spec.dtype == np.bool_:
      x = np.ones(spec.shape, bool)
    elif np.issubdtype(spec.dtype, np.integer):
      x = rng.integers(4, config.model.text.vocab_size, spec.shape).astype(spec.dtype)
    else:
      x = rng.standard_normal(spec.shape).astype(spec.dtype)
    out[name] = jax.device_put(x, batch_sharding)
  return out


def train_step(ts: state_lib.TrainSetup, mesh, stage: stages.Stage):
  """The update step of `stage`, jitted for `mesh`: state and batch placed by their shardings,
  the state donated. What the trainer runs, AOT compiles and MFU counts."""
  return jax.jit(step_lib.make_train_step(ts, stage),
                 in_shardings=(ts.shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(ts.shardings, None), donate_argnums=0)


def step_flops_per_device(config, mesh, stage: stages.Stage) -> float:
  """Model FLOPs of one train step per device, as MFU counts them: the matmuls of the traced
  step (`metrics.model_flops`: every layer of a scanned stack counts), with remat off so the
  recomputed forward is left out, split evenly over the mesh's devices. Traced, never
  compiled: about as long as one trace of the step (seconds, at any depth)."""
  config = resolve.resolved(config)
  config.model.remat = "none"
  ts = state_lib.setup(config, mesh)
  with jax.set_mesh(mesh):
    flops = metrics.model_flops(train_step(ts, mesh, stage), ts.abstract_state,
                                abstract_batch(config, sharding.batch_sharding(mesh)))
  return flops / mesh.size


def compile_train_step(config, mesh, stage: stages.Stage | None = None):
  """(compiled step, TrainSetup, seconds to lower + compile) for `config` on `mesh`, training
  `stage` (default: the config's first)."""
  config = resolve.resolved(config)
  ts = state_lib.setup(config, mesh)
  stage = stages.plan(config)[0] if stage is None else stage
  t0 = time.perf_counter()
  with jax.set_mesh(mesh):
    compiled = train_step(ts, mesh, stage).lower(
        ts.abstract_state, abstract_batch(config, sharding.batch_sharding(mesh))).compile()
  return compiled, ts, time.perf_counter() - t0


def memory_report(config, mesh) -> dict:
  """Per-device bytes of params and optimizer state (from the shardings) and XLA's memory
  analysis of each stage's compiled step (stages differ in activations), for one mesh."""
  config = resolve.resolved(config)
  report = dict(mesh=dict(mesh.shape), devices=mesh.size, stages={})
  for stage in stages.plan(config):
    compiled, ts, seconds = compile_train_step(config, mesh, stage)
    mem = compiled.memory_analysis()
    report["stages"][stage.name] = dict(
        compile_seconds=round(seconds, 1), xla_argument_bytes=mem.argument_size_in_bytes,
        xla_temp_bytes=mem.temp_size_in_bytes, xla_output_bytes=mem.output_size_in_bytes)
  state = ts.abstract_state
  total = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
  report.update(
      params=sum(x.size for x in jax.tree.leaves(state["params"])),
      params_bytes_total=total(state["params"]),
      params_bytes_per_device=sharding.per_device_bytes(state["params"], ts.shardings["params"]),
      opt_bytes_total=total(state["opt_state"]),
      opt_bytes_per_device=sharding.per_device_bytes(state["opt_state"],
                                                     ts.shardings["opt_state"]),
      xla_temp_bytes_max=max(s["xla_temp_bytes"] for s in report["stages"].values()))
  return report
