"""The train state (a plain pytree Orbax can save) and its placement on the mesh.

state = {step, params, opt_state, nonfinite_in_row, skipped_steps}: params are a pure dict of
arrays, the model's graph (its Python structure) is kept apart as `graphdef` and merged back
inside the step. Two more entries exist only when some stage's objectives need them:
`teacher`, the EMA teacher's copy of the param modules it uses (e.g. {image, dino_head}), and
`objectives`, the state of objectives that keep one (e.g. {dino: {center}}).
Shardings come from the abstract init (`eval_shape`), never written by hand per layer; the
teacher's are its modules' params' own.
"""
import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from medjax import objectives, sharding
from medjax.models.forward import TEACHER_OUTPUTS
from medjax.models.medmllm import MedMLLM
from medjax.train import optimizer, stages


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A run's EMA teacher: the top-level param modules it keeps a copy of, and its momentum
  schedule (config.teacher: cosine from `momentum` to `final_momentum` over a stage)."""
  modules: tuple[str, ...]
  momentum: float
  final_momentum: float


@dataclasses.dataclass
class TrainSetup:
  graphdef: nnx.GraphDef
  tx: optax.GradientTransformation
  abstract_state: dict  # ShapeDtypeStructs carrying their shardings
  shardings: dict  # NamedSharding per state leaf
  logical_specs: dict  # logical PartitionSpec per param
  teacher: Teacher | None = None  # None: no stage needs one, the state holds none
  objective_states: tuple = ()  # objectives whose state is in state["objectives"]


def teacher_of(config) -> Teacher | None:
  """The teacher `config`'s stages need (the union over stages), or None."""
  outputs = {n for stage in stages.plan(config)
             for n in objectives.teacher_needs(stage.objectives)}
  if not outputs:
    return None
  modules = tuple(sorted({m for n in outputs for m in TEACHER_OUTPUTS[n]}))
  return Teacher(modules, float(config.teacher.momentum), float(config.teacher.final_momentum))


def stateful_objectives(config) -> tuple:
  """The objectives with state that any stage of `config` trains."""
  return tuple(sorted({n for stage in stages.plan(config)
                       for n in objectives.stateful(stage.objectives)}))


def _new_state(config, tx, seed, teacher: Teacher | None, stateful: tuple):
  params = nnx.to_pure_dict(nnx.state(MedMLLM(config.model, rngs=nnx.Rngs(seed))))
  zero = jnp.zeros((), jnp.int32)
  state = dict(step=zero, params=params, opt_state=tx.init(params), nonfinite_in_row=zero,
               skipped_steps=zero)
  if teacher is not None:  # each stage using it restarts it from the student (step.py)
    state["teacher"] = {m: jax.tree.map(jnp.copy, params[m]) for m in teacher.modules}
  if stateful:
    state["objectives"] = {n: objectives.init_state(n, params) for n in stateful}
  return state


def setup(config, mesh) -> TrainSetup:
  """Abstract state, graph and shardings for `config` on `mesh`: no memory is allocated."""
  tx = optimizer.make(config.optim, config.total_steps)
  abstract_model = nnx.eval_shape(lambda: MedMLLM(config.model, rngs=nnx.Rngs(0)))
  graphdef, model_state = nnx.split(abstract_model)
  logical = nnx.to_pure_dict(nnx.get_partition_spec(model_state))
  teacher, stateful = teacher_of(config), stateful_objectives(config)
  abstract = jax.eval_shape(lambda: _new_state(config, tx, 0, teacher, stateful))

  replicated = NamedSharding(mesh, P())
  params = sharding.param_shardings(abstract["params"], logical, mesh)
  # Optimizer moments mirror the params and take their shardings; counters are replicated.
  opt = optax.tree_map_params(
      tx, lambda _, s: s, abstract["opt_state"], params,
      transform_non_params=lambda _: replicated, is_leaf=lambda x: isinstance(x, NamedSharding))
  shardings = dict(step=replicated, params=params, opt_state=opt, nonfinite_in_row=replicated,
                   skipped_steps=replicated)
  if teacher is not None:
    shardings["teacher"] = {m: params[m] for m in teacher.modules}
  if stateful:
    shardings["objectives"] = jax.tree.map(lambda _: replicated, abstract["objectives"])
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          abstract, shardings)
  return TrainSetup(graphdef, tx, abstract, shardings, logical, teacher, stateful)


def init(config, ts: TrainSetup):
  """Creates the state directly in its sharded layout (no full copy on any one device)."""
  return jax.jit(lambda: _new_state(config, ts.tx, config.seed, ts.teacher,
                                    ts.objective_states),
                 out_shardings=ts.shardings)()
