"""Staged objective schedules: e.g. image-only -> text-only -> image-text, or one mixture.

`config.stages` is a tuple of `dict(name=..., steps=N, weights=dict(objective=weight, ...))`;
a stage trains the objectives it names with those weights (every other objective is off), then
hands the same params and optimizer to the next stage. Empty `stages` = one stage over
`total_steps` with the weights in `config.objectives`. Ablation: a weight of 0.
"""
import dataclasses

import jax
from flax import nnx

from medjax import objectives


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  first: int  # first step of the stage (steps count from 1)
  last: int
  objectives: object  # the config.objectives entries with this stage's weights


def plan(config) -> list[Stage]:
  if not config.stages:
    return [Stage("main", 1, config.total_steps, config.objectives)]
  out, first = [], 1
  for spec in config.stages:
    cfg = config.objectives.copy_and_resolve_references()
    unknown = set(spec["weights"]) - set(cfg.keys())
    if unknown:
      raise ValueError(f"stage {spec['name']!r} weights unknown objectives {sorted(unknown)}")
    for name in cfg.keys():
      cfg[name].weight = float(spec["weights"].get(name, 0.0))
    out.append(Stage(spec["name"], first, first + spec["steps"] - 1, cfg))
    first += spec["steps"]
  if out[-1].last != config.total_steps:
    raise ValueError(f"stages add up to {out[-1].last} steps but total_steps="
                     f"{config.total_steps}; make them agree")
  return out


def at(stages: list[Stage], step: int) -> Stage:
  return next(s for s in stages if s.first <= step <= s.last)


def flops_shares(graphdef, stage: Stage, params, batch) -> dict:
  """Each active objective's forward+backward FLOPs (compiled alone, XLA's count before
  optimisation) over the sum of them: where a stage's step time goes, to first order. Shared
  work (one image encoding serving two objectives) is counted in each."""
  def grad_of(name):
    cfg = stage.objectives.copy_and_resolve_references()
    for other in cfg.keys():
      cfg[other].weight = float(other == name)

    def loss(params, batch):
      model = nnx.merge(graphdef, params)
      return objectives.total_loss(model(batch, needs=objectives.needs(cfg)), batch, cfg)[0]

    return jax.jit(jax.grad(loss)).lower(params, batch).cost_analysis().get("flops", 0.0)

  names = list(objectives.active(stage.objectives))
  if len(names) == 1:
    return {f"{names[0]}/flops_share": 1.0}
  flops = {name: grad_of(name) for name in names}
  total = sum(flops.values()) or 1.0
  return {f"{name}/flops_share": f / total for name, f in flops.items()}
