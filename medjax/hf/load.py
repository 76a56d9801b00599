"""`--config.init_from=hf:DIR[,hf:DIR]`: pretrained Hugging Face towers into medjax's params.

A local transformers model directory (config.json + safetensors; pickled weights are refused)
of a class in `names.ARCHS` replaces medjax's image or text tower; every other param keeps its
initial value. The medjax config must describe the same tower (widths, depth, options such as
the class token or post-LN blocks): a mismatch is refused with the `--config` flags that fix it,
a tensor that does not fit with its names. A text tower also needs its own tokenizer
(`--config.data.tokenizer=hf:DIR`, or the sentencepiece file of a medjax export): its embedding
rows are that tokenizer's ids.

  medjax-train --config medmllm_s --workdir runs/raddino \\
      --config.init_from=hf:/models/rad-dino,hf:/models/cxr-bert \\
      --config.data.tokenizer=hf:/models/cxr-bert \\
      --config.model.image.class_token=True --config.model.image.positions=learned ...
"""
from __future__ import annotations

import logging

import jax
import numpy as np

from medjax import hf, named_params
from medjax.configs.resolve import HF_PREFIX, ConfigError
from medjax.hf import convert, names

log = logging.getLogger(__name__)


def towers(init_from: str, config, params: dict, abstract_params, logical_specs) -> dict:
  """`params` with the tower of each `hf:DIR` of `init_from` replaced by the HF weights, placed
  with the shardings of `abstract_params`. Every directory is checked against the config
  before any weights are read."""
  if config is None or params is None:
    raise ValueError(f"init_from={init_from!r}: Hugging Face towers need the config and the "
                     "initial params (load_params(..., config=, params=))")
  torch, transformers = hf.require("torch", "transformers")
  plans, seen = [], {}
  for item in init_from.split(","):
    if not item.startswith(HF_PREFIX):
      raise ValueError(f"init_from={init_from!r}: {item!r} is not {HF_PREFIX}DIR")
    path = hf.local_dir(item[len(HF_PREFIX):], "init_from")
    name, hf_config = _arch(path, transformers)
    arch = names.ARCHS[name]
    if arch.tower in seen:
      raise ValueError(f"init_from={init_from!r}: two {arch.tower} towers ({seen[arch.tower]}, "
                       f"{path})")
    seen[arch.tower] = path
    _check_config(arch, config, hf_config, path)
    plans.append((path, name, arch))
  for path, name, arch in plans:
    state = _state_dict(path, name, torch, transformers)
    params = {**params, arch.tower: _tower(path, name, arch, state, config, abstract_params,
                                           logical_specs)}
  return params


def _arch(path: str, transformers):
  """(class name, HF config) of the model AutoModel builds for `path`."""
  from transformers.models.auto import modeling_auto
  hf_config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
  name = modeling_auto.MODEL_MAPPING_NAMES.get(hf_config.model_type)
  if name not in names.ARCHS:
    raise ValueError(f"init_from=hf:{path}: a {name or hf_config.model_type} model; medjax "
                     f"imports {sorted(names.ARCHS)}")
  return name, hf_config


def config_problems(arch: names.Arch, tower_cfg, hf_config) -> list[tuple]:
  """(medjax field, value it needs, why) for each field that does not describe the HF tower;
  a field of None: an HF setting medjax cannot hold at all."""
  out = []
  for field, attr in arch.config.items():
    if isinstance(attr, names.Derived):
      value, attr = attr.of(hf_config), attr.text
    else:
      value = getattr(hf_config, attr)
    if field == "mlp_act":
      if value not in names.ACTS:
        out.append((None, None, f"hidden_act={value!r} (medjax has {sorted(names.ACTS)})"))
        continue
      value = names.ACTS[value]
    if tower_cfg[field] != value:
      out.append((field, value, f"its {attr} is {value!r}"))
  for field, value in arch.options.items():
    if tower_cfg[field] != value:
      out.append((field, value, "its architecture has it"))
  for attr, value in arch.requires.items():
    if getattr(hf_config, attr, value) != value:
      out.append((None, None, f"{attr}={getattr(hf_config, attr)!r} (medjax holds {value!r})"))
  if arch.tower == "image" and tower_cfg.channels not in (1, hf_config.num_channels):
    out.append(("channels", 1, f"its {hf_config.num_channels} input channels are summed into 1"))
  return out


def _check_config(arch, config, hf_config, path: str) -> None:
  problems = config_problems(arch, config.model[arch.tower], hf_config)
  if arch.tower == "text" and not config.data.tokenizer:  # not the one trained on the data
    problems.append(("data.tokenizer", f"{HF_PREFIX}{path}", "its embeddings are rows of its "
                     "own tokenizer's ids (hf:DIR, or the sentencepiece file of a medjax export)"))
  if not problems:
    return
  prefix = lambda field: field if field.startswith("data.") else f"model.{arch.tower}.{field}"
  lines = [f"config.{prefix(f)} = {_current(config, prefix(f))!r}: {why}" if f else why
           for f, _, why in problems]
  flags = " ".join(f"--config.{prefix(f)}={v}" for f, v, _ in problems if f)
  fix = f"\nPass: {flags}" if flags else "\nmedjax cannot hold this model."
  raise ConfigError(f"init_from=hf:{path} does not fit the config:\n  " + "\n  ".join(lines) +
                    fix)


def _current(config, field: str):
  node = config
  for part in field.split("."):
    node = node[part]
  return node


def _place(value: np.ndarray, like: jax.ShapeDtypeStruct) -> jax.Array:
  """`value` as a global array with `like`'s sharding; every process holds all of `value`, so
  each fills its own shards (works on a multi-host mesh)."""
  value = value.astype(like.dtype)
  return jax.make_array_from_callback(like.shape, like.sharding, lambda index: value[index])


def _state_dict(path: str, name: str, torch, transformers) -> dict[str, np.ndarray]:
  """The tensors of the `name` model in `path` (safetensors only), as transformers loads them:
  current names, whatever the checkpoint's age."""
  model, info = transformers.AutoModel.from_pretrained(
      path, local_files_only=True, use_safetensors=True, output_loading_info=True,
      dtype=torch.float32)
  absent = sorted(info["missing_keys"]) + sorted(k for k, *_ in info["mismatched_keys"])
  if absent:  # transformers would have filled them with random values
    raise ValueError(f"init_from=hf:{path}: the checkpoint lacks {len(absent)} tensors of "
                     f"{name}, e.g. {absent[:5]}")
  if info["unexpected_keys"]:  # e.g. the MLM head of a BertForMaskedLM checkpoint
    log.info("hf:%s: %d tensors of the checkpoint are not part of %s (e.g. %s); not used.",
             path, len(info["unexpected_keys"]), name, sorted(info["unexpected_keys"])[0])
  return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def _tower(path, name, arch, state, config, abstract_params, logical_specs) -> dict:
  """The tower's nested params from HF `state`, placed like `abstract_params`."""
  abstract, specs = abstract_params[arch.tower], logical_specs[arch.tower]
  named = convert.tower_from_hf(arch, state, named_params.named_shapes(abstract, specs),
                                config.model[arch.tower].depth, f"init_from=hf:{path}")
  nested = jax.tree.map(np.asarray, named_params.from_named(named, abstract, specs))
  log.info("Imported the %s tower from %s (%s, %.1fM params).", arch.tower, path, name,
           sum(v.size for v in named.values()) / 1e6)
  return jax.tree.map(_place, nested, abstract)
