"""Training objectives, chosen by name from `config.objectives`.

Each objective module has `loss(outputs, batch, cfg) -> (scalar, metrics)`, where `outputs` is
what the model's forward pass returned and `cfg` the objective's own config entry.
"""
import importlib

import jax.numpy as jnp

NAMES = ("image_text",)


def active(objectives_cfg) -> dict:
  """The objectives with a non-zero weight: name -> config entry. Unknown names are an error."""
  unknown = set(objectives_cfg.keys()) - set(NAMES)
  if unknown:
    raise ValueError(f"Unknown objectives {sorted(unknown)}; known: {list(NAMES)}")
  return {name: c for name, c in objectives_cfg.items() if c.weight}


def total_loss(outputs, batch, objectives_cfg):
  """Weighted sum of the active objectives, with each one's loss and metrics under its name."""
  total, metrics = jnp.zeros((), jnp.float32), {}
  for name, cfg in active(objectives_cfg).items():
    value, extra = importlib.import_module(f"medjax.objectives.{name}").loss(outputs, batch, cfg)
    total = total + cfg.weight * value
    metrics[f"{name}/loss"] = value
    metrics.update({f"{name}/{k}": v for k, v in extra.items()})
  return total, metrics
