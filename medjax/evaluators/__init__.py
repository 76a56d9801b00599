"""Evaluators that run inside the training loop, chosen by name in the config (big_vision's
pattern): `config.evals.<name> = dict(type=<module>, every=N, <options>)`.

Each module here defines `Evaluator(name, config, mesh, ts, **options)` with `run(state,
stage) -> {metric: value}` (the train state: params, and the EMA teacher and objective states
the validation loss needs), metrics named `<name>/<metric>`. They run on every process (their
arrays span the mesh); process 0 writes the results with the step's other metrics. Types:
`val_loss` (the stage's objectives on validation batches), `retrieval` (image <-> text R@k),
`probe` (a linear probe on a labelled split).
"""
from __future__ import annotations

import importlib

TYPES = ("val_loss", "retrieval", "probe")


def build(config, mesh, ts) -> list:
  """The evaluators of `config.evals`, in name order."""
  out = []
  for name in sorted(config.evals):
    options = dict(config.evals[name])
    kind, every = options.pop("type"), options.pop("every")
    module = importlib.import_module(f"medjax.evaluators.{kind}")
    evaluator = module.Evaluator(name, config, mesh, ts, **options)
    evaluator.every = every
    out.append(evaluator)
  return out


def validate(config) -> None:
  """Raises ValueError naming the first bad `config.evals.<name>` field."""
  for name, options in config.evals.items():
    field = f"config.evals.{name}"
    if options.get("type") not in TYPES:
      raise ValueError(f"{field}.type = {options.get('type')!r}: one of {list(TYPES)}")
    every = options.get("every")
    if not isinstance(every, int) or every < 1 or every % config.log_every:
      raise ValueError(f"{field}.every = {every!r}: a positive multiple of config.log_every "
                       f"({config.log_every}); results are written with the log step's metrics")
