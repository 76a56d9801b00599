"""The one syntax of a config's `arg` (`--config name:arg`): comma-separated `key=value`, and a
bare `key` for True, e.g. `medmllm_s:only=mae+image_level,steps=1600` or `convirt:tiny`."""
from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """`arg` parsed against `defaults` (its only allowed keys): each value takes the type of its
  default (bool, int, float, str). An unknown key or a bad value raises naming it."""
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(f"config arg {arg!r}: unknown key {key!r}; allowed: {sorted(defaults)}")
    kind = type(defaults[key])
    if kind is bool:
      if sep and value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"config arg {key}={value!r}: expected true or false")
      out[key] = not sep or value.lower() in ("true", "1")
    elif not sep:
      raise ValueError(f"config arg {key!r} needs a value ({key}=...)")
    else:
      try:
        out[key] = kind(value)
      except ValueError:
        raise ValueError(f"config arg {key}={value!r}: expected {kind.__name__}") from None
  return out
