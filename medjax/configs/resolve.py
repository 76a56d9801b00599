"""One resolution step for every config: derived fields filled from their one source, then the
whole config checked, before any device or file work. Every entry point calls `resolved`.

Derived (never set by hand): `data.image_size`, `data.channels` and `data.patch_size` are the
model's (`model.image.*`): the pipeline makes images and MAE noise for the model it feeds.
Tower options a config leaves out of `model.image` / `model.text` (configs that set them as a
whole dict) take their defaults from `base.IMAGE_OPTIONS` / `base.TEXT_OPTIONS`.
"""
from __future__ import annotations

import math

import ml_collections

from medjax import contract
from medjax.configs import base

_DERIVED = {"data.image_size": "model.image.image_size", "data.channels": "model.image.channels",
            "data.patch_size": "model.image.patch_size"}
NORMALIZE = ("dataset", "per_image")  # data.normalize
POSITIONS = ("sincos", "learned")  # model.image.positions
NORMS = ("pre", "post")  # model.text.norm
MLP_ACTS = ("gelu_tanh", "gelu")  # model.<tower>.mlp_act
TOWER_OPTIONS = {"image": base.IMAGE_OPTIONS, "text": base.TEXT_OPTIONS}
HF_PREFIX = "hf:"  # init_from / data.tokenizer: a Hugging Face model directory
# Fields a run may change when it resumes in the same workdir: how it runs, not what it learns.
MAY_DIFFER_ON_RESUME = ("total_steps", "mesh", "log_every", "checkpoint_every",
                        "keep_checkpoints", "init_from", "init_from_cast",
                        "record_batch_digests", "peak_flops_per_device", "max_nonfinite_in_row",
                        "data.dir", "data.num_workers", "data.prefetch_buffer", "evals",
                        "prompts", "timeouts")


class ConfigError(ValueError):
  """A config field with a value medjax cannot run; the message names the field."""


def _get(config, path: str):
  node = config
  for part in path.split("."):
    node = node[part]
  return node


def resolved(config) -> ml_collections.ConfigDict:
  """A copy of `config` with the derived fields filled and every field checked."""
  out = config.copy_and_resolve_references()
  with out.unlocked():
    for target, source in _DERIVED.items():
      section, name = target.split(".")
      out[section][name] = _get(out, source)
    for tower, options in TOWER_OPTIONS.items():
      for name, default in options.items():
        if name not in out.model[tower]:
          out.model[tower][name] = default
  validate(out)
  return out


def _check(ok: bool, field: str, value, allowed: str) -> None:
  if not ok:
    raise ConfigError(f"config.{field} = {value!r}: {allowed}")


def _int(config, field: str, low: int = 1, high: int | None = None) -> None:
  value = _get(config, field)
  ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
  ok = ok and (high is None or value <= high)
  _check(ok, field, value, f"must be an integer >= {low}" + (f" and <= {high}" if high else ""))


def _real(config, field: str, low: float, high: float, *, open_low=False, open_high=False):
  value = _get(config, field)
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
  ok = ok and (value > low if open_low else value >= low)
  ok = ok and (value < high if open_high else value <= high)
  _check(ok, field, value, f"must be a number in {'(' if open_low else '['}{low}, {high}"
                           f"{')' if open_high else ']'}")


def _one_of(config, field: str, allowed) -> None:
  value = _get(config, field)
  _check(value in allowed, field, value, f"must be one of {list(allowed)}")


def validate(config) -> None:
  """Raises ConfigError naming the first field out of its allowed range."""
  for field in ("total_steps", "batch_size", "log_every", "checkpoint_every",
                "keep_checkpoints", "max_nonfinite_in_row"):
    _int(config, field)
  _int(config, "seed", low=0)
  _real(config, "peak_flops_per_device", 0, math.inf, open_high=True)  # 0: found at start
  mesh = dict(config.mesh)
  _check(set(mesh) <= {"data", "fsdp", "tensor"}, "mesh", mesh, "axes are data, fsdp, tensor")
  _check(all(isinstance(v, int) and (v >= 1 or v == -1) for v in mesh.values())
         and list(mesh.values()).count(-1) <= 1, "mesh", mesh,
         "each axis a size >= 1, at most one -1 (the remaining devices)")

  from medjax.models import layers, precision  # the allowed names live beside their use
  m, d = config.model, config.data
  _one_of(config, "model.dtype", precision.CHOICES)
  _one_of(config, "model.remat", tuple(layers.REMAT_POLICIES))
  _real(config, "model.mask_ratio", 0, 1, open_high=True)
  _int(config, "model.proj_dim")
  _int(config, "model.logits_chunk", low=0)
  for tower in ("image", "text", "decoder"):
    _int(config, f"model.{tower}.depth", low=0 if tower == "decoder" else 1)
    width, heads = m[tower].get("width", m.text.width), m[tower].heads
    _check(width % heads == 0, f"model.{tower}.heads", heads, f"must divide the width {width}")
  _one_of(config, "model.image.positions", POSITIONS)
  _check(m.image.positions != "sincos" or m.image.width % 4 == 0, "model.image.width",
         m.image.width, "must be divisible by 4 (2-D sin-cos positions)")
  _check(isinstance(m.image.class_token, bool), "model.image.class_token", m.image.class_token,
         "must be True or False")
  _real(config, "model.image.layer_scale", 0, math.inf, open_high=True)
  _one_of(config, "model.text.norm", NORMS)
  for tower in TOWER_OPTIONS:
    _real(config, f"model.{tower}.norm_eps", 0, 1, open_low=True, open_high=True)
    _one_of(config, f"model.{tower}.mlp_act", MLP_ACTS)
  _int(config, "model.image.patch_size")
  _int(config, "model.image.channels")
  _check(m.image.image_size % m.image.patch_size == 0, "model.image.image_size",
         m.image.image_size, f"must be a multiple of model.image.patch_size={m.image.patch_size}")
  _int(config, "model.text.vocab_size", low=len(contract.SPECIAL_IDS) + 1)
  for head in ("dino_head", "ibot_head"):
    _int(config, f"model.{head}.prototypes", low=0)
    for field in ("hidden", "bottleneck", "depth"):
      _int(config, f"model.{head}.{field}")
  _real(config, "teacher.momentum", 0, 1)
  _real(config, "teacher.final_momentum", config.teacher.momentum, 1)

  _int(config, "data.text_len", low=2, high=m.text.max_len)
  if m.decoder.depth:
    _int(config, "data.text_len", low=2, high=m.decoder.max_len)
    _int(config, "data.sentence_len", low=2, high=m.decoder.max_len)
  _int(config, "data.sentence_len", low=2)
  _real(config, "data.mlm_rate", 0, 1, open_low=True, open_high=True)
  _real(config, "data.patient_pairs", 0, 1)
  _one_of(config, "data.normalize", NORMALIZE)
  _real(config, "data.std", 0, math.inf, open_low=True, open_high=True)
  for field in ("data.crop_scale", "data.local_crop_scale", "data.ibot_mask_ratio"):
    _range(config, field, upper=1)
  _int(config, "data.local_crops", low=0)
  if d.local_crops:  # the size matters only when there are local crops
    _int(config, "data.local_crop_size", low=m.image.patch_size)
    _check(d.local_crop_size % m.image.patch_size == 0, "data.local_crop_size",
           d.local_crop_size, f"must be a multiple of model.image.patch_size={m.image.patch_size}")
  _real(config, "data.ibot_mask_probability", 0, 1)
  _range(config, "data.gamma")
  _real(config, "data.blur_probability", 0, 1)
  if d.blur_probability:
    _range(config, "data.blur_sigma")
  unknown = set(d.withheld_labels) - set(contract.LABELS)
  _check(not unknown, "data.withheld_labels", tuple(d.withheld_labels),
         f"{sorted(unknown)} are not labels; labels are {list(contract.LABELS)}")
  _int(config, "data.num_workers", low=0)
  _check(not d.tokenizer.startswith(HF_PREFIX) or len(d.tokenizer) > len(HF_PREFIX),
         "data.tokenizer", d.tokenizer, f"'{HF_PREFIX}' needs a directory after it")
  hf = [p for p in config.init_from.split(",") if p.startswith(HF_PREFIX)]
  if hf:
    _check(len(hf) <= 2 and len(hf) == len(config.init_from.split(","))
           and all(len(p) > len(HF_PREFIX) for p in hf), "init_from", config.init_from,
           f"'{HF_PREFIX}DIR' or '{HF_PREFIX}DIR,{HF_PREFIX}DIR' (an image and a text tower)")
  _int(config, "data.prefetch_buffer", low=0)

  o = config.optim
  _real(config, "optim.lr", 0, math.inf, open_low=True, open_high=True)
  _int(config, "optim.warmup_steps", low=0)
  _real(config, "optim.end_lr_fraction", 0, 1)
  _real(config, "optim.b1", 0, 1, open_high=True)
  _real(config, "optim.b2", 0, 1, open_high=True)
  _real(config, "optim.weight_decay", 0, math.inf, open_high=True)
  _real(config, "optim.grad_clip", 0, math.inf, open_low=True, open_high=True)
  del o

  for task, classes in config.prompts.items():
    field = f"prompts.{task}"
    _check(task in contract.TASKS, field, task,
           f"is not a task; tasks are {list(contract.TASKS)}")
    for side in ("positive", "negative"):
      texts = classes.get(side) or ()
      _check(not isinstance(texts, str) and len(texts) > 0 and all(
          isinstance(t, str) and t.strip() for t in texts), f"{field}.{side}", texts,
          "must be a non-empty tuple of non-empty prompt strings")
    _check(set(classes) == {"positive", "negative"}, field, dict(classes),
           "takes exactly positive=(...) and negative=(...)")

  from medjax import objectives  # the registry of objective names and their own checks
  try:
    objectives.validate(config.objectives)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  _real(config, "timeouts.checkpoint_seconds", 0, math.inf, open_low=True, open_high=True)
  _real(config, "timeouts.lost_process_seconds", 0, math.inf, open_low=True, open_high=True)
  _check(isinstance(config.init_from_cast, bool), "init_from_cast", config.init_from_cast,
         "must be true or false")
  from medjax import evaluators  # the evaluator types
  try:
    evaluators.validate(config)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  from medjax.train import stages  # stage names, weights, sources and step counts
  try:
    plan = stages.plan(config)
  except ValueError as e:
    raise ConfigError(f"config.stages: {e}") from None
  _check_stage_inputs(config, plan, objectives)


def _range(config, field: str, upper: float = math.inf) -> None:
  """(low, high) with 0 < low <= high <= upper, both finite: a share (upper 1) or a size."""
  value = tuple(_get(config, field))
  low, high = (value + (None, None))[:2]
  ok = len(value) == 2 and 0 < low <= high <= upper and math.isfinite(high)
  _check(ok, field, value, "must be (low, high) with 0 < low <= high"
         + (f" <= {upper:g}" if upper < math.inf else ""))


def _check_stage_inputs(config, plan, objectives) -> None:
  """Every objective a stage trains has what it needs (its REQUIRES fields > 0), and the
  optional batch keys are made only if some stage reads them (else they would cost for
  nothing)."""
  reads = set()
  for stage in plan:
    for name in objectives.active(stage.objectives):
      for field in objectives.requires(name):
        _check(_get(config, field) > 0, field, _get(config, field),
               f"must be > 0: stage {stage.name!r} trains the {name} objective")
    reads |= objectives.needs(stage.objectives)
  for field, output, what in (("data.local_crops", "dino_local", "local crops (dino)"),
                              ("data.ibot_mask_probability", "ibot_patch",
                               "hidden patches (ibot)")):
    _check(_get(config, field) == 0 or output in reads, field, _get(config, field),
           f"must be 0: no stage trains an objective that reads {what}")
