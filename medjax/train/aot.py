"""Ahead-of-time compilation of the train step for any mesh, without data or weights.

Catches out-of-memory and sharding mistakes of large configs on a machine that could never run
them: everything is abstract (ShapeDtypeStruct) up to XLA's compiled program.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

from medjax import sharding
from medjax.data import entities
from medjax.train import state as state_lib
from medjax.train import step as step_lib


def abstract_batch(config, batch_sharding=None) -> dict:
  """The global batch the input pipeline yields for `config` (docs/contracts.md), as
  ShapeDtypeStructs. tests/train/test_aot.py checks it against the real pipeline."""
  b, s, c = config.batch_size, config.data.image_size, config.data.channels
  t, ts = config.data.text_len, config.data.sentence_len
  patches, e = (s // config.model.image.patch_size) ** 2, len(entities.ENTITIES)
  f32, i32, bool_ = jnp.float32, jnp.int32, jnp.bool_
  shapes = {
      "image": ((s, s, c), f32), "image2": ((s, s, c), f32), "patient": ((), i32),
      "has_image": ((), bool_), "has_text": ((), bool_), "has_sentence": ((), bool_),
      "has_findings_impression": ((), bool_), "mlm_weights": ((t,), f32),
      "sr_target_ids": ((ts,), i32), "sr_target_mask": ((ts,), bool_),
      "image_entities": ((e,), f32), "text_entities": ((e,), f32), "mae_noise": ((patches,), f32),
      **{k: ((t,), i32) for k in ("text_ids", "mlm_ids", "mlm_targets", "sr_context_ids",
                                  "findings_ids", "impression_ids")},
      **{k: ((t,), bool_) for k in ("text_mask", "sr_context_mask", "findings_mask",
                                    "impression_mask")},
  }
  return {k: jax.ShapeDtypeStruct((b, *shape), dtype, sharding=batch_sharding)
          for k, (shape, dtype) in shapes.items()}


def synthetic_batch(config, batch_sharding) -> dict:
  """Random arrays of `abstract_batch`'s shapes, placed on the mesh (for benchmarks)."""
  rng = np.random.default_rng(0)
  out = {}
  for name, spec in abstract_batch(config).items():
    if spec.dtype == np.bool_:
      x = np.ones(spec.shape, bool)
    elif np.issubdtype(spec.dtype, np.integer):
      x = rng.integers(4, config.model.text.vocab_size, spec.shape).astype(spec.dtype)
    else:
      x = rng.standard_normal(spec.shape).astype(spec.dtype)
    out[name] = jax.device_put(x, batch_sharding)
  return out


def compile_train_step(config, mesh):
  """(compiled step, TrainSetup, seconds to lower + compile) for `config` on `mesh`."""
  ts = state_lib.setup(config, mesh)
  batch_sharding = sharding.batch_sharding(mesh)
  step = jax.jit(step_lib.make_train_step(ts.graphdef, ts.tx, config),
                 in_shardings=(ts.shardings, batch_sharding),
                 out_shardings=(ts.shardings, None), donate_argnums=0)
  t0 = time.perf_counter()
  with jax.set_mesh(mesh):
    compiled = step.lower(ts.abstract_state, abstract_batch(config, batch_sharding)).compile()
  return compiled, ts, time.perf_counter() - t0


def memory_report(config, mesh) -> dict:
  """Per-device bytes of params and optimizer state (from the shardings) and XLA's own
  memory analysis of the compiled step, for one mesh."""
  compiled, ts, seconds = compile_train_step(config, mesh)
  state = ts.abstract_state
  total = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
  mem = compiled.memory_analysis()
  return dict(
      mesh=dict(mesh.shape), devices=mesh.size, compile_seconds=round(seconds, 1),
      params=sum(x.size for x in jax.tree.leaves(state["params"])),
      params_bytes_total=total(state["params"]),
      params_bytes_per_device=sharding.per_device_bytes(state["params"], ts.shardings["params"]),
      opt_bytes_total=total(state["opt_state"]),
      opt_bytes_per_device=sharding.per_device_bytes(state["opt_state"],
                                                     ts.shardings["opt_state"]),
      xla_argument_bytes=mem.argument_size_in_bytes, xla_temp_bytes=mem.temp_size_in_bytes,
      xla_output_bytes=mem.output_size_in_bytes, xla_alias_bytes=mem.alias_size_in_bytes)
