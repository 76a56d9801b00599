"""The jitted update step: forward (and the EMA teacher's, for self-distillation), weighted
objectives, clipped AdamW update, teacher and objective-state updates, finite guard."""
import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from medjax import objectives
from medjax.models import forward
from medjax.objectives import _common
from medjax.train import optimizer


def teacher_momentum(teacher, stage_step, stage_steps: int) -> jax.Array:
  """DINO's cosine schedule: `teacher.momentum` at a stage's first step (stage_step 0), rising
  towards `teacher.final_momentum`, which it would reach one step after the stage's last."""
  progress = jnp.asarray(stage_step, jnp.float32) / stage_steps
  base, final = teacher.momentum, teacher.final_momentum
  return final - (final - base) * (1 + jnp.cos(math.pi * progress)) / 2


def ema(teacher: dict, params: dict, momentum) -> dict:
  """teacher * momentum + (1 - momentum) * the student's params of the teacher's modules."""
  return {m: jax.tree.map(lambda t, s: momentum * t + (1 - momentum) * s, teacher[m], params[m])
          for m in teacher}


def objective_inputs(graphdef, objectives_cfg, params, teacher, objective_states, batch,
                     stage_step) -> dict:
  """What the objectives read besides the student's outputs: `teacher/<name>` (the teacher's
  outputs, from `graphdef` merged with the teacher's modules over `params`), each stateful
  objective's state and the stage step (medjax/objectives/__init__.py)."""
  out = {_common.STAGE_STEP: stage_step}
  out.update({_common.state_key(n): s for n, s in objective_states.items()})
  names = objectives.teacher_needs(objectives_cfg)
  if names:
    model = nnx.merge(graphdef, {**params, **teacher})
    out.update({forward.TEACHER + k: v
                for k, v in forward.teacher_outputs(model, batch, names).items()})
  return out


def stage_inputs(ts, stage, state, batch):
  """(`objective_inputs` of `stage` at `state`'s step, the teacher, the objective states) that
  `stage`'s objectives read there: at the stage's first step the teacher restarts as a copy of
  the student and objective states from their initial values, later steps read them from the
  state. The train step and the validation loss (medjax/evaluators/val_loss.py) share it."""
  cfg, params = stage.objectives, state["params"]
  stage_step = state["step"] - (stage.first - 1)  # 0 at the stage's first step
  fresh = stage_step == 0
  restart = lambda start, kept: jax.tree.map(lambda a, b: jnp.where(fresh, a, b), start, kept)
  teacher = (restart({m: params[m] for m in ts.teacher.modules}, state["teacher"])
             if objectives.teacher_needs(cfg) else None)
  states = {n: restart(objectives.init_state(n, params), state["objectives"][n])
            for n in objectives.stateful(cfg)}
  inputs = objective_inputs(ts.graphdef, cfg, params, teacher, states, batch, stage_step)
  return inputs, teacher, states


def loss_fn(graphdef, objectives_cfg):
  """loss(params, batch, inputs) -> (weighted total, metrics) of `objectives_cfg`'s active
  objectives, `inputs` from `objective_inputs`: what the step differentiates."""
  needs = objectives.needs(objectives_cfg)

  def loss(params, batch, inputs):
    outputs = dict(nnx.merge(graphdef, params)(batch, needs=needs), **inputs)
    return objectives.total_loss(outputs, batch, objectives_cfg)

  return loss


def make_train_step(ts, stage):
  """Returns step(state, batch) -> (state, metrics) training `stage.objectives` (a
  `medjax.train.stages.Stage`) with `ts` (a `state.TrainSetup`). Jit it, state donated.

  The teacher and objective states restart at the stage's first step (`stage_inputs`), so each
  stage that uses them is self-contained, a resumed run too; stages that do not use them leave
  them untouched."""
  cfg = stage.objectives
  uses_teacher = bool(objectives.teacher_needs(cfg))
  if uses_teacher and ts.teacher is None:
    raise ValueError(f"stage {stage.name!r} needs an EMA teacher the train state does not hold")
  stage_steps = stage.last - stage.first + 1
  loss, tx = loss_fn(ts.graphdef, cfg), ts.tx

  def step(state, batch):
    params = state["params"]
    inputs, teacher, states = stage_inputs(ts, stage, state, batch)
    stage_step = inputs[_common.STAGE_STEP]
    (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params, batch, inputs)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new_params, opt_state = optimizer.keep_unread(
        tx, optimizer.read_leaves(loss, params, batch, inputs),
        optax.apply_updates(params, updates), params, opt_state, state["opt_state"])
    grad_norm = optax.global_norm(grads)
    # A non-finite loss or gradient leaves params and optimizer untouched (and is counted); the
    # host loop stops the run after `max_nonfinite_in_row` such steps. So no NaN is ever saved.
    # (an update that overflows, e.g. from a bad learning rate, counts as non-finite too).
    finite = (jnp.isfinite(value) & jnp.isfinite(grad_norm)
              & jnp.isfinite(optax.global_norm(updates)))
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = dict(
        step=state["step"] + 1,
        params=keep(new_params, params),
        opt_state=keep(opt_state, state["opt_state"]),
        nonfinite_in_row=jnp.where(finite, 0, state["nonfinite_in_row"] + 1),
        skipped_steps=state["skipped_steps"] + (~finite).astype(jnp.int32),
    )
    if "teacher" in state:
      if uses_teacher:  # after the student's update, as DINO does
        momentum = teacher_momentum(ts.teacher, stage_step, stage_steps)
        new_state["teacher"] = keep(ema(teacher, new_state["params"], momentum), teacher)
        metrics = dict(metrics, teacher_momentum=momentum)
      else:
        new_state["teacher"] = state["teacher"]
    if "objectives" in state:
      updated = objectives.update_states(states, inputs, batch, cfg)
      new_state["objectives"] = dict(state["objectives"], **keep(updated, states))
    metrics = dict(metrics, loss=value, grad_norm=grad_norm,
                   param_norm=optax.global_norm(new_state["params"]),
                   skipped_steps=new_state["skipped_steps"])
    return new_state, metrics

  return step
