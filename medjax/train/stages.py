"""Staged objective schedules: e.g. image-only -> text-only -> image-text, or one mixture.

`config.stages` is a tuple of `dict(name=..., steps=N, weights=dict(objective=weight, ...))`;
a stage trains the objectives it names with those weights (every other objective is off), then
hands the same params and optimizer to the next stage. Empty `stages` = one stage over
`total_steps` with the weights in `config.objectives`. Ablation: a weight of 0.

A stage may also name its own `sources` (entries as in `data.sources`; default: `data.sources`):
an image-only stage then reads only the datasets that have images instead of spending half of
each batch on rows it cannot use. A stage whose sources differ from the previous stage's starts
its own data stream (fresh, from `config.seed`); otherwise the stream runs on across stages
(`stream_start`).
"""
import dataclasses

import jax

from medjax import objectives
from medjax.models.forward import TEACHER_OUTPUTS
from medjax.train import metrics, optimizer, step


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  first: int  # first step of the stage (steps count from 1)
  last: int
  objectives: object  # the config.objectives entries with this stage's weights
  sources: tuple  # the data.sources entries this stage reads (() = the single data.name)


def plan(config) -> list[Stage]:
  default_sources = tuple(dict(s) for s in config.data.sources)
  if not config.stages:
    return [Stage("main", 1, config.total_steps, config.objectives, default_sources)]
  out, first = [], 1
  for spec in config.stages:
    extra = set(spec) - {"name", "steps", "weights", "sources"}
    if extra:
      raise ValueError(f"stage {spec.get('name')!r} has unknown keys {sorted(extra)}; "
                       "a stage has name, steps, weights and optionally sources")
    cfg = config.objectives.copy_and_resolve_references()
    unknown = set(spec["weights"]) - set(cfg)
    if unknown:
      raise ValueError(f"stage {spec['name']!r} weights unknown objectives {sorted(unknown)}")
    for name in cfg:
      cfg[name].weight = float(spec["weights"].get(name, 0.0))
    sources = tuple(dict(s) for s in spec.get("sources", default_sources))
    out.append(Stage(spec["name"], first, first + spec["steps"] - 1, cfg, sources))
    first += spec["steps"]
  if out[-1].last != config.total_steps:
    raise ValueError(f"stages add up to {out[-1].last} steps but total_steps="
                     f"{config.total_steps}; make them agree")
  return out


def at(stages: list[Stage], step: int) -> Stage:
  return next(s for s in stages if s.first <= step <= s.last)


def data_config(data_cfg, stage: Stage):
  """The input pipeline's config for `stage`: `data_cfg` with the stage's sources."""
  out = data_cfg.copy_and_resolve_references()
  out.sources = stage.sources
  return out


def stream_start(stages: list[Stage], step: int) -> int:
  """The first step of the data stream `step` reads: consecutive stages on the same sources
  share one stream; a stage on other sources starts its own. Step s reads that stream's batch
  s - stream_start(s)."""
  first = at(stages, step)
  for stage in reversed(stages[:stages.index(first)]):
    if stage.sources != first.sources:
      break
    first = stage
  return first.first


def _first_step_loss(graphdef, cfg):
  """loss(params, batch) of objectives `cfg` at a stage's first step, the EMA teacher traced
  with the student's params in its place (the same shapes)."""
  loss = step.loss_fn(graphdef, cfg)

  def total(params, batch):
    teacher = {m: params[m] for n in objectives.teacher_needs(cfg) for m in TEACHER_OUTPUTS[n]}
    states = {n: objectives.init_state(n, params) for n in objectives.stateful(cfg)}
    inputs = step.objective_inputs(graphdef, cfg, params, teacher, states, batch, 0)
    return loss(params, batch, inputs)[0]

  return total


def trained_modules(graphdef, stage: Stage, params, batch) -> tuple[list, list]:
  """(the top-level modules `stage` trains, those it keeps as they are): a module is trained
  when the stage's loss reads any of its params (the step's rule, optimizer.read_leaves; here
  the teacher is traced with the student's params, and reads only modules the student's own
  heads read too)."""
  read = optimizer.read_leaves(_first_step_loss(graphdef, stage.objectives), params, batch)
  trained = [m for m in read if any(jax.tree.leaves(read[m]))]
  return trained, [m for m in read if m not in trained]


def flops_shares(graphdef, stage: Stage, params, batch) -> dict:
  """Each active objective's forward+backward FLOPs (traced alone, `metrics.model_flops`) over
  the sum of them: where a stage's step time goes, to first order. Shared work (one image
  encoding serving two objectives) is counted in each, and so is the EMA teacher's forward
  pass in each objective reading it."""
  def grad_of(name):
    cfg = stage.objectives.copy_and_resolve_references()
    for other in cfg:
      cfg[other].weight = float(other == name)
    return metrics.model_flops(jax.grad(_first_step_loss(graphdef, cfg)), params, batch)

  names = list(objectives.active(stage.objectives))
  if len(names) == 1:
    return {f"{names[0]}/flops_share": 1.0}
  flops = {name: grad_of(name) for name in names}
  total = sum(flops.values()) or 1.0
  return {f"{name}/flops_share": f / total for name, f in flops.items()}
