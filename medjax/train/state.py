"""The train state (a plain pytree Orbax can save) and its placement on the mesh.

state = {step, params, opt_state, nonfinite_in_row, skipped_steps}: params are a pure dict of
arrays, the model's graph (its Python structure) is kept apart as `graphdef` and merged back
inside the step.
Shardings come from the abstract init (`eval_shape`), never written by hand per layer.
"""
import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from medjax import sharding
from medjax.models.medmllm import MedMLLM
from medjax.train import optimizer


@dataclasses.dataclass
class TrainSetup:
  graphdef: nnx.GraphDef
  tx: optax.GradientTransformation
  abstract_state: dict  # ShapeDtypeStructs carrying their shardings
  shardings: dict  # NamedSharding per state leaf
  logical_specs: dict  # logical PartitionSpec per param


def _new_state(model_cfg, tx, seed):
  params = nnx.to_pure_dict(nnx.state(MedMLLM(model_cfg, rngs=nnx.Rngs(seed))))
  zero = jnp.zeros((), jnp.int32)
  return dict(step=zero, params=params, opt_state=tx.init(params), nonfinite_in_row=zero,
              skipped_steps=zero)


def setup(config, mesh) -> TrainSetup:
  """Abstract state, graph and shardings for `config` on `mesh`: no memory is allocated."""
  tx = optimizer.make(config.optim, config.total_steps)
  abstract_model = nnx.eval_shape(lambda: MedMLLM(config.model, rngs=nnx.Rngs(0)))
  graphdef, model_state = nnx.split(abstract_model)
  logical = nnx.to_pure_dict(nnx.get_partition_spec(model_state))
  abstract = jax.eval_shape(lambda: _new_state(config.model, tx, 0))

  replicated = NamedSharding(mesh, P())
  params = sharding.param_shardings(abstract["params"], logical, mesh)
  # Optimizer moments mirror the params and take their shardings; counters are replicated.
  opt = optax.tree_map_params(
      tx, lambda _, s: s, abstract["opt_state"], params,
      transform_non_params=lambda _: replicated, is_leaf=lambda x: isinstance(x, NamedSharding))
  shardings = dict(step=replicated, params=params, opt_state=opt, nonfinite_in_row=replicated,
                   skipped_steps=replicated)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          abstract, shardings)
  return TrainSetup(graphdef, tx, abstract, shardings, logical)


def init(config, ts: TrainSetup):
  """Creates the state directly in its sharded layout (no full copy on any one device)."""
  return jax.jit(lambda: _new_state(config.model, ts.tx, config.seed),
                 out_shardings=ts.shardings)()
