"""One resolution step for every config (medjax/configs/resolve.py) and one `arg` syntax
(common.parse_arg): derived fields from their one source, every bad field named before any
device or file work."""
import re

import pytest

from medjax.configs import (
  base,
  common,
  convirt,
  medmllm_b,
  medmllm_l,
  medmllm_s,
  medmllm_tiny,
  resolve,
)


def test_derived_fields_come_from_the_model():
  c = medmllm_tiny.get_config()
  assert "image_size" not in c.data and "patch_size" not in c.data  # never set by hand
  r = resolve.resolved(c)
  assert (r.data.image_size, r.data.channels, r.data.patch_size) == (64, 1, 16)
  assert resolve.resolved(r).to_dict() == r.to_dict()  # idempotent
  assert "image_size" not in c.data  # the input config is untouched


@pytest.mark.parametrize("module", [medmllm_tiny, medmllm_s, medmllm_b, medmllm_l, convirt])
def test_every_shipped_config_resolves(module):
  resolve.resolved(module.get_config())


BAD = [
    ("log_every", 0, "config.log_every = 0: must be an integer >= 1"),
    ("checkpoint_every", 0, "config.checkpoint_every = 0"),
    ("total_steps", 0, "config.total_steps = 0"),
    ("batch_size", -4, "config.batch_size = -4"),
    ("mesh", dict(data=-1, fsdp=-1, tensor=1), "at most one -1"),
    ("data.text_len", 999, "config.data.text_len = 999: must be an integer >= 2 and <= 64"),
    ("data.mlm_rate", 1.5, "config.data.mlm_rate = 1.5: must be a number in (0, 1)"),
    ("data.normalize", "per-image", "config.data.normalize = 'per-image': must be one of"),
    ("data.crop_scale", (0.9, 0.5), "config.data.crop_scale"),
    ("data.gamma", (1.5, 0.8), "config.data.gamma = (1.5, 0.8): must be (low, high)"),
    ("data.blur_probability", 1.5, "config.data.blur_probability = 1.5"),
    ("data.withheld_labels", ("covid",), "['covid'] are not labels"),
    ("model.image.image_size", 70, "must be a multiple of model.image.patch_size=16"),
    ("model.image.heads", 3, "config.model.image.heads = 3: must divide the width 64"),
    ("model.dtype", "fp16", "config.model.dtype = 'fp16'"),
    ("optim.lr", float("inf"), "config.optim.lr = inf"),
    ("optim.b2", 1.0, "config.optim.b2 = 1.0"),
    ("objectives.image_text.kind", "softmax", "image_text.kind = 'softmax'"),
    ("objectives.image_level.tau", 0.0, "image_level.tau = 0.0: a temperature"),
    ("objectives.mae.weight", -1.0, "mae.weight = -1.0"),
    ("timeouts.checkpoint_seconds", 0, "config.timeouts.checkpoint_seconds = 0"),
    ("stages", (dict(name="a", steps=3, weights=dict(mae=1.0)),), "add up to 3 steps"),
    ("evals", dict(v=dict(type="val_loss", every=15)), "a positive multiple of config.log_every"),
    ("evals", dict(v=dict(type="loss", every=10)), "config.evals.v.type = 'loss'"),
]


@pytest.mark.parametrize("field, value, message", BAD, ids=[b[0] + "=" + repr(b[1]) for b in BAD])
def test_a_bad_field_is_named_with_its_allowed_range(field, value, message):
  c = medmllm_tiny.get_config()
  *parents, last = field.split(".")
  node = c
  for p in parents:
    node = node[p]
  with node.unlocked() if hasattr(node, "unlocked") else _nothing():
    node[last] = value
  with pytest.raises(resolve.ConfigError, match=re.escape(message)):
    resolve.resolved(c)


class _nothing:
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False


def test_one_arg_syntax():
  arg = common.parse_arg("only=mae+mlm,steps=20,tiny", only="", steps=0, tiny=False)
  assert (arg.only, arg.steps, arg.tiny) == ("mae+mlm", 20, True)
  with pytest.raises(ValueError, match="unknown key 'step'"):
    common.parse_arg("step=2", steps=0)
  with pytest.raises(ValueError, match="steps='x': expected int"):
    common.parse_arg("steps=x", steps=0)
  with pytest.raises(ValueError, match="unknown key 'tiny'"):
    base.get_config("tiny")  # base takes no arg: refused, not dropped
  assert convirt.get_config("tiny").batch_size == medmllm_tiny.get_config().batch_size
  assert medmllm_s.get_config("only=mae,steps=5").total_steps == 5


def test_medmllm_s_image_steps_lengthens_the_image_stage_only():
  c = medmllm_s.get_config("image_steps=1000,image=image_level+dino")
  assert [(s["name"], s["steps"]) for s in c.stages] == [("image", 1000), ("text", 100),
                                                         ("image_text", 300)]
  assert c.total_steps == 1400
  assert c.objectives.dino.warmup_steps == 300  # 30% of the image stage, as at 300 steps (90)
  resolve.resolved(c)  # the stages add up to total_steps
  with pytest.raises(ValueError, match="image_steps"):
    medmllm_s.get_config("only=mae,steps=5,image_steps=1000")
  with pytest.raises(ValueError, match="image_steps=0"):
    medmllm_s.get_config("image_steps=0")
