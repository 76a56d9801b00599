import ml_collections
import numpy as np
import pytest

from medjax import objectives
from medjax.configs import base
from medjax.models.forward import TEACHER, TEACHER_OUTPUTS
from medjax.models.medmllm import OUTPUTS


def _outputs():
  emb = np.eye(3, dtype=np.float32)
  return dict(image_emb=emb, text_emb=emb, logit_scale=np.float32(0.0),
              logit_bias=np.float32(0.0))


BATCH = dict(has_image=np.ones(3, bool), has_text=np.ones(3, bool))


def _config(**weights):
  """The base config's objectives with the given weights (all others 0)."""
  cfg = base.get_config().objectives
  for name in objectives.NAMES:
    cfg[name].weight = weights.get(name, 0.0)
  return cfg


def test_weights_scale_the_total_and_zero_removes():
  cfg = _config(image_text=0.5)
  total, metrics = objectives.total_loss(_outputs(), BATCH, cfg)
  np.testing.assert_allclose(total, 0.5 * metrics["image_text/loss"], rtol=1e-6)
  cfg.image_text.weight = 0.0
  total, metrics = objectives.total_loss(_outputs(), BATCH, cfg)
  assert float(total) == 0.0 and not metrics


def test_unknown_objective_is_rejected():
  cfg = ml_collections.ConfigDict(dict(imgae_text=dict(weight=1.0)))
  with pytest.raises(ValueError, match="imgae_text"):
    objectives.total_loss(_outputs(), BATCH, cfg)


def test_every_objective_has_defaults_and_reads_known_outputs():
  cfg = base.get_config().objectives
  assert set(cfg.keys()) == set(objectives.NAMES)
  assert objectives.active(cfg).keys() == {"image_text"}  # existing runs are unchanged
  for name in objectives.NAMES:
    needs = set(objectives._module(name).NEEDS)
    teacher = {n for n in needs if n.startswith(TEACHER)}
    assert needs - teacher <= OUTPUTS, name
    assert {n[len(TEACHER):] for n in teacher} <= set(TEACHER_OUTPUTS), name


def test_needs_is_the_union_over_active_objectives():
  assert objectives.needs(_config()) == frozenset()
  assert objectives.needs(_config(mlm=1.0, mae=0.5)) == {"mlm_logits", "mae_pred", "mae_target",
                                                         "mae_mask"}
  assert objectives.needs(_config(image_level=1.0, patient_level=1.0)) == {"view_emb",
                                                                           "view2_emb"}


def test_teacher_outputs_are_needed_apart_from_the_students():
  cfg = _config(dino=1.0, ibot=1.0, mae=1.0)
  assert objectives.needs(cfg) == {"dino_global", "dino_local", "ibot_patch", "mae_pred",
                                   "mae_target", "mae_mask"}
  assert objectives.teacher_needs(cfg) == {"dino_global", "ibot_patch"}
  assert objectives.stateful(cfg) == ("dino", "ibot")
  assert not objectives.teacher_needs(_config(koleo=1.0, mae=1.0))
