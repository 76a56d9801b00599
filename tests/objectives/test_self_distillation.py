"""dino, ibot and koleo (medjax/objectives) against values worked out by hand, and against a
literal per-row, per-pair reading of their definitions; the centre updates and the teacher
temperature schedule; the config checks that guard them."""
import math

import jax
import numpy as np
import pytest

from medjax import objectives
from medjax.configs import base, resolve
from medjax.objectives import _common, dino, ibot, koleo

CFG = base.get_config().objectives


def _outputs(stage_step=0, **arrays):
  out = {_common.STAGE_STEP: np.int32(stage_step)}
  for name, center in (("dino", arrays.pop("dino_center", None)),
                       ("ibot", arrays.pop("ibot_center", None))):
    if center is not None:
      out[_common.state_key(name)] = {"center": np.asarray(center, np.float32)}
  out.update({k: np.asarray(v, np.float32) for k, v in arrays.items()})
  return out


def _jit(fn, *args):
  """fn(*args), its last argument (the objective's config) static: compiled once, faster than
  eager dispatch, which compiles each op."""
  *arrays, cfg = args
  return jax.jit(lambda *a: fn(*a, cfg))(*arrays)


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_teacher_temperature_warms_up_linearly_then_stays():
  cfg = CFG.dino.copy_and_resolve_references()  # 0.04 -> 0.07 over 30 steps
  got = [float(_common.teacher_temperature(cfg, s)) for s in (0, 15, 30, 500)]
  np.testing.assert_allclose(got, [0.04, 0.055, 0.07, 0.07], rtol=1e-6)
  cfg.warmup_steps = 0
  assert float(_common.teacher_temperature(cfg, 0)) == pytest.approx(0.07)


def test_dino_by_hand_uniform_teacher_and_a_3_to_1_student():
  """Teacher logits equal: its distribution is (1/2, 1/2) at any temperature. Student logits
  (0, tau_s ln 3): softmax (1/4, 3/4). Each of the 2 pairs costs -(ln(1/4) + ln(3/4)) / 2."""
  tau_s = CFG.dino.tau_student
  student = [[[0.0, tau_s * math.log(3)]] * 2]  # [B=1, 2 global crops, P=2]
  out = _outputs(dino_global=student, dino_local=np.zeros((1, 0, 2)),
                 **{"teacher/dino_global": [[[0.3, 0.3], [-1.0, -1.0]]]}, dino_center=[0, 0])
  value, metrics = _jit(dino.loss, out, dict(has_image=np.array([True])), CFG.dino)
  assert float(value) == pytest.approx(0.5 * math.log(16 / 3), rel=1e-6)
  assert float(metrics["teacher_entropy"]) == pytest.approx(math.log(2), rel=1e-6)


def test_dino_matches_its_definition_pair_by_pair():
  rng = np.random.default_rng(0)
  b, local, p = 5, 3, 7
  student_g, student_l = rng.normal(size=(b, 2, p)), rng.normal(size=(b, local, p))
  teacher, center = rng.normal(size=(b, 2, p)), rng.normal(size=p)
  has_image = np.array([True, False, True, True, False])
  out = _outputs(stage_step=10, dino_global=student_g, dino_local=student_l,
                 **{"teacher/dino_global": teacher}, dino_center=center)
  value, metrics = _jit(dino.loss, out, dict(has_image=has_image), CFG.dino)
  tau_t = 0.04 + 0.03 * 10 / 30
  crops = np.concatenate([student_g, student_l], axis=1)
  rows = []
  for row in np.flatnonzero(has_image):
    terms = []
    for i in range(2):
      target = _softmax((teacher[row, i] - center) / tau_t)
      for j in range(2 + local):
        if j != i:
          terms.append(-np.sum(target * np.log(_softmax(crops[row, j] / 0.1))))
    assert len(terms) == 2 * (local + 1)
    rows.append(np.mean(terms))
  assert float(value) == pytest.approx(np.mean(rows), rel=1e-5)
  assert float(metrics["teacher_temp"]) == pytest.approx(tau_t, rel=1e-6)


def test_dino_centre_moves_towards_the_teachers_mean_over_rows_with_an_image():
  teacher = np.array([[[1.0, 3.0], [3.0, 5.0]],  # mean over both crops: (2, 4)
                      [[100.0, 100.0], [100.0, 100.0]]])  # no image: not counted
  out = _outputs(**{"teacher/dino_global": teacher})
  state = _jit(dino.update_state, {"center": np.array([10.0, 0.0], np.float32)}, out,
                            dict(has_image=np.array([True, False])), CFG.dino)
  np.testing.assert_allclose(state["center"], [0.9 * 10 + 0.1 * 2, 0.1 * 4], rtol=1e-6)
  unchanged = _jit(dino.update_state, {"center": np.array([10.0, 0.0], np.float32)}, out,
                                dict(has_image=np.array([False, False])), CFG.dino)
  np.testing.assert_array_equal(unchanged["center"], [10.0, 0.0])


def test_ibot_by_hand_and_by_definition():
  rng = np.random.default_rng(1)
  b, m, p = 3, 4, 5
  student, teacher = rng.normal(size=(b, 2, m, p)), rng.normal(size=(b, 2, m, p))
  center = rng.normal(size=p)
  slots = np.array([[[3, 7, -1, -1], [-1, -1, -1, -1]],  # crop 2 of row 0 hides nothing
                    [[0, 1, 2, 5], [9, -1, -1, -1]],
                    [[4, -1, -1, -1], [2, 8, -1, -1]]])  # row 2 has no image
  batch = dict(ibot_patches=slots, has_image=np.array([True, True, False]))
  out = _outputs(ibot_patch=student, **{"teacher/ibot_patch": teacher}, ibot_center=center)
  value, metrics = _jit(ibot.loss, out, batch, CFG.ibot)
  per_crop = []
  for row in (0, 1):
    for crop in range(2):
      used = np.flatnonzero(slots[row, crop] >= 0)
      ce = [-np.sum(_softmax((teacher[row, crop, k] - center) / 0.04)
                    * np.log(_softmax(student[row, crop, k] / 0.1))) for k in used]
      per_crop.append(np.mean(ce) if len(ce) else 0.0)  # iBOT / DINOv2: such a crop adds 0
  assert float(value) == pytest.approx(np.mean(per_crop), rel=1e-5)
  assert float(metrics["hidden_patches"]) == 2 + 4 + 1
  # The centre: a mean over the hidden patches of rows with an image.
  state = _jit(ibot.update_state, {"center": np.zeros(p, np.float32)}, out, batch, CFG.ibot)
  hidden = teacher[:2][slots[:2] >= 0]
  np.testing.assert_allclose(state["center"], 0.1 * hidden.mean(0), rtol=1e-5, atol=1e-7)


def test_koleo_by_hand_three_points_on_a_circle():
  """(1, 0), (0, 1), (-1, 0): every nearest neighbour is at distance sqrt(2), so each crop
  costs -ln sqrt(2); the second crop repeats the first (scaled, which the l2-norm undoes). The
  fourth row has no image and is no one's neighbour."""
  points = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.9, 0.1]])
  pooled = np.stack([points, 3 * points], axis=1)  # [B, 2, D]
  value, metrics = _jit(koleo.loss, _outputs(global_pooled=pooled),
                              dict(has_image=np.array([True, True, True, False])), CFG.koleo)
  assert float(value) == pytest.approx(-math.log(2), rel=1e-5)
  assert float(metrics["nearest_distance"]) == pytest.approx(math.sqrt(2), rel=1e-5)


def test_koleo_matches_its_definition():
  rng = np.random.default_rng(2)
  pooled = rng.normal(size=(6, 2, 4))
  has_image = np.array([True, True, False, True, True, True])
  value, _ = _jit(koleo.loss, _outputs(global_pooled=pooled), dict(has_image=has_image),
                  CFG.koleo)
  want = 0.0
  for crop in range(2):
    z = pooled[has_image, crop]
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    nearest = [min(np.linalg.norm(z[i] - z[j]) for j in range(len(z)) if j != i)
               for i in range(len(z))]
    want += np.mean(-np.log(nearest))
  assert float(value) == pytest.approx(want, rel=1e-4)


def _tiny_config(**changes):
  c = base.get_config()
  c.objectives.image_text.weight = 0.0
  for key, value in changes.items():
    section, name = key.split("__")
    c[section][name] = value
  return c


def test_self_distillation_config_errors_name_the_field():
  with pytest.raises(resolve.ConfigError, match="model.dino_head.prototypes.*trains the dino"):
    resolve.resolved(_tiny_config(objectives__dino=dict(CFG.dino, weight=1.0)))
  with pytest.raises(resolve.ConfigError, match="data.ibot_mask_probability.*trains the ibot"):
    resolve.resolved(_tiny_config(objectives__ibot=dict(CFG.ibot, weight=1.0),
                                  model__ibot_head=dict(base.get_config().model.ibot_head,
                                                        prototypes=8)))
  with pytest.raises(resolve.ConfigError, match="data.local_crops.*reads local crops"):
    resolve.resolved(_tiny_config(data__local_crops=4))
  with pytest.raises(resolve.ConfigError, match="data.local_crop_size = 40.*multiple"):
    resolve.resolved(_tiny_config(data__local_crops=2, data__local_crop_size=40))
  resolve.resolved(_tiny_config(data__local_crop_size=40))  # no local crops: the size is unused
  with pytest.raises(resolve.ConfigError, match="objectives.dino.center_momentum"):
    resolve.resolved(_tiny_config(objectives__dino=dict(CFG.dino, center_momentum=1.0)))
  with pytest.raises(resolve.ConfigError, match="objectives.ibot.tau_teacher "):
    resolve.resolved(_tiny_config(objectives__ibot=dict(CFG.ibot, tau_teacher=0.0)))
  with pytest.raises(resolve.ConfigError, match="teacher.final_momentum"):
    resolve.resolved(_tiny_config(teacher__final_momentum=0.5))
  assert objectives.requires("koleo") == ()
