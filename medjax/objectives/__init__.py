"""Training objectives, chosen by name from `config.objectives`.

Each objective module has `NEEDS` (the model outputs it reads, see medjax.models.medmllm.OUTPUTS)
and `loss(outputs, batch, cfg) -> (scalar, metrics)`, where `outputs` is what the model's forward
pass returned and `cfg` the objective's own config entry. Losses average over the GLOBAL batch
and switch unusable rows off with weights (has_image, has_text, ...), so they are 0, not NaN,
when a batch has nothing for them.
"""
import importlib
import math

import jax.numpy as jnp

NAMES = ("image_text", "image_level", "patient_level", "mlm", "sentence_reconstruction",
         "findings_impression", "entity_alignment", "mae", "captioning")


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


def needs(objectives_cfg) -> frozenset:
  """The model outputs the active objectives read: what `model(batch, needs=...)` computes."""
  return frozenset(n for name in active(objectives_cfg) for n in _module(name).NEEDS)


def total_loss(outputs, batch, objectives_cfg):
  """Weighted sum of the active objectives, with each one's loss and metrics under its name."""
  total, metrics = jnp.zeros((), jnp.float32), {}
  for name, cfg in active(objectives_cfg).items():
    value, extra = _module(name).loss(outputs, batch, cfg)
    total = total + cfg.weight * value
    metrics[f"{name}/loss"] = value
    metrics.update({f"{name}/{k}": v for k, v in extra.items()})
  return total, metrics
