"""Training objectives, chosen by name from `config.objectives`.

Each objective module has `NEEDS` (the model outputs it reads, see medjax.models.medmllm.OUTPUTS;
`teacher/<name>` for an output of the EMA teacher, medjax.models.forward.TEACHER_OUTPUTS) and
`loss(outputs, batch, cfg) -> (scalar, metrics)`, where `outputs` is what the forward passes
returned and `cfg` the objective's own config entry. Losses average over the GLOBAL batch and
switch unusable rows off with weights (has_image, has_text, ...), so they are 0, not NaN, when a
batch has nothing for them.

Optional, per module: `validate(cfg)` (its own options); `REQUIRES`, config fields that must be
> 0 for it to run (checked by medjax.configs.resolve); and state kept in the train state across
steps (e.g. DINO's centre): `init_state(params) -> dict of arrays` (sized from the params) and
`update_state(state, outputs, batch, cfg) -> dict`, called by the train step outside the
gradient, where `outputs` holds the teacher's outputs and the entries below but not the
student's. The train step puts into `outputs` each objective's state before the step
(`outputs[_common.state_key(name)]`) and `outputs[_common.STAGE_STEP]` (steps of the stage done
before this one), for schedules.
"""
import importlib
import math

import jax.numpy as jnp

from medjax.models.forward import TEACHER

NAMES = ("image_text", "image_level", "patient_level", "mlm", "sentence_reconstruction",
         "findings_impression", "entity_alignment", "mae", "captioning", "dino", "ibot", "koleo")


def _module(name: str):
  return importlib.import_module(f"medjax.objectives.{name}")


def active(objectives_cfg) -> dict:
  """The objectives with a non-zero weight: name -> config entry. Unknown names are an error."""
  unknown = set(objectives_cfg.keys()) - set(NAMES)
  if unknown:
    raise ValueError(f"Unknown objectives {sorted(unknown)}; known: {list(NAMES)}")
  return {name: c for name, c in objectives_cfg.items() if c.weight}


def validate(objectives_cfg) -> None:
  """Raises ValueError naming the first bad `config.objectives.<name>.<field>`: unknown
  objectives, weights that are not finite and >= 0, temperatures that are not > 0, and each
  objective's own options (its module's `validate(cfg)`, where it has one)."""
  active(objectives_cfg)
  for name, cfg in objectives_cfg.items():
    for key, value in cfg.items():
      field = f"config.objectives.{name}.{key}"
      number = isinstance(value, (int, float)) and not isinstance(value, bool)
      if key == "weight" and not (number and math.isfinite(value) and value >= 0):
        raise ValueError(f"{field} = {value!r}: must be a finite number >= 0 (0 = off)")
      learned = name == "image_text" and key == "tau"  # image_text: tau 0 = learned
      if key.startswith("tau") and not (number and math.isfinite(value)
                                        and (value > 0 or (learned and value == 0))):
        raise ValueError(f"{field} = {value!r}: a temperature must be a finite number > 0"
                         + (" (or 0: learned)" if learned else ""))
    own = getattr(_module(name), "validate", None)
    if own is not None:
      own(cfg)


def _all_needs(objectives_cfg):
  return {n for name in active(objectives_cfg) for n in _module(name).NEEDS}


def needs(objectives_cfg) -> frozenset:
  """The model outputs the active objectives read: what `model(batch, needs=...)` computes."""
  return frozenset(n for n in _all_needs(objectives_cfg) if not n.startswith(TEACHER))


def teacher_needs(objectives_cfg) -> frozenset:
  """The EMA teacher's outputs the active objectives read (names without 'teacher/'): what
  `forward.teacher_outputs` computes. Empty: no objective needs a teacher."""
  return frozenset(n[len(TEACHER):] for n in _all_needs(objectives_cfg) if n.startswith(TEACHER))


def stateful(objectives_cfg) -> tuple:
  """Names of the active objectives that keep state across steps (`init_state`)."""
  return tuple(n for n in active(objectives_cfg) if hasattr(_module(n), "init_state"))


def init_state(name: str, params) -> dict:
  """An objective's state at the start of a stage that trains it, sized from the model's
  `params` (arrays or abstract shapes)."""
  return _module(name).init_state(params)


def update_states(states: dict, outputs, batch, objectives_cfg) -> dict:
  """Each stateful active objective's state after this step (`states`: name -> state)."""
  return {name: _module(name).update_state(states[name], outputs, batch, objectives_cfg[name])
          for name in states}


def requires(name: str) -> tuple:
  """Config fields (dotted paths) that must be > 0 for objective `name` to run."""
  return tuple(getattr(_module(name), "REQUIRES", ()))


def total_loss(outputs, batch, objectives_cfg):
  """Weighted sum of the active objectives, with each one's loss and metrics under its name."""
  total, metrics = jnp.zeros((), jnp.float32), {}
  for name, cfg in active(objectives_cfg).items():
    value, extra = _module(name).loss(outputs, batch, cfg)
    total = total + cfg.weight * value
    metrics[f"{name}/loss"] = value
    metrics.update({f"{name}/{k}": v for k, v in extra.items()})
  return total, metrics
