"""The EMA teacher and objective states in the train state (medjax/train/state.py, step.py):
absent unless an objective needs them, sharded like the student, restarted from the student at
the stage's first step, then equal to their closed form after k steps.

Elsewhere: the teacher and centre updates on 8 devices against 1 in
tests/objectives/test_sharded_equivalence.py; SIGTERM + resume with them, bit for bit, in
tests/train/test_checkpoint.py (its runs train dino, ibot and koleo too)."""
import jax
import numpy as np
import pytest

from medjax import sharding
from medjax.configs import medmllm_tiny, rad_dino, resolve
from medjax.train import aot, stages, state as state_lib
from tests.models.conftest import _quick_compiles  # noqa: F401  (XLA optimisations off)

import batches

SELF_DISTILLATION = dict(image_text=0.0, dino=1.0, ibot=1.0, koleo=0.1)


def _config():
  c = batches.config(batch_size=8, data=batches.MULTI_CROP, objectives=SELF_DISTILLATION,
                     **batches.HEADS)
  c.total_steps = 6
  c.optim.update(lr=1e-2, warmup_steps=0)  # the student moves visibly every step
  c.teacher.momentum = 0.5  # and so does the teacher
  return resolve.resolved(c)


def _mesh(shape, n):
  return sharding.make_mesh(shape, jax.devices()[:n])


def _numpy(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), jax.device_get(tree))


def test_no_teacher_or_objective_state_unless_an_objective_needs_them():
  plain = state_lib.setup(resolve.resolved(medmllm_tiny.get_config()), _mesh(dict(data=1), 1))
  assert set(plain.abstract_state) == {"step", "params", "opt_state", "nonfinite_in_row",
                                       "skipped_steps"} and plain.teacher is None
  if jax.device_count() < 8:
    pytest.skip("needs 8 (fake) devices, see tests/conftest.py")
  ts = state_lib.setup(resolve.resolved(rad_dino.get_config("tiny")),
                       _mesh(dict(data=2, fsdp=4), 8))
  assert ts.teacher.modules == ("dino_head", "ibot_head", "image")
  assert set(ts.abstract_state["objectives"]) == {"dino", "ibot"}
  # Sharded like the student's params, leaf by leaf (same logical axes): one FSDP layout.
  state = ts.abstract_state
  for module in ts.teacher.modules:
    for t, p in zip(jax.tree.leaves(state["teacher"][module]),
                    jax.tree.leaves(state["params"][module]), strict=True):
      assert t.shape == p.shape and t.sharding.is_equivalent_to(p.sharding, p.ndim)
  kernel = state["teacher"]["image"]["blocks"]["layers"]["mlp"]["up"]["kernel"]
  assert "fsdp" in kernel.sharding.spec  # really split, not replicated


def _momentum(t, steps, base=0.5, final=1.0):  # DINO's cosine, written out
  return final - (final - base) * (1 + np.cos(np.pi * t / steps)) / 2


def test_ema_teacher_restarts_from_the_student_then_follows_its_closed_form():
  """From a state whose teacher was zeroed, the stage's first step restarts it from the student
  theta_0; after k steps, teacher = prod_t m_t theta_0 + sum_s (1 - m_s) prod_{t>s} m_t
  theta_{s+1}: theta_s is the student after step s, m_t DINO's cosine momentum at stage step t
  (of 6 stage steps here)."""
  config, k = _config(), 3
  mesh = _mesh(dict(data=1), 1)
  ts = state_lib.setup(config, mesh)
  state = state_lib.init(config, ts)
  state["teacher"] = jax.tree.map(np.zeros_like, jax.device_get(state["teacher"]))
  batch = batches.random_batch(config)
  fn = aot.train_step(ts, mesh, stages.plan(config)[0])
  modules = ts.teacher.modules
  students, momenta = [_numpy({m: state["params"][m] for m in modules})], []
  for _ in range(k):
    state, metrics = fn(state, batch)  # donates its input: copies are kept on the host
    assert int(metrics["skipped_steps"]) == 0
    students.append(_numpy({m: state["params"][m] for m in modules}))
    momenta.append(float(metrics["teacher_momentum"]))
  m = [_momentum(t, 6) for t in range(k)]
  np.testing.assert_allclose(momenta, m, rtol=1e-6)
  want = jax.tree.map(lambda x: x * np.prod(m), students[0])
  for s in range(k):
    weight = (1 - m[s]) * np.prod(m[s + 1:])
    want = jax.tree.map(lambda w, x, c=weight: w + c * x, want, students[s + 1])
  got = _numpy(state["teacher"])
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6), got, want)
  lag = max(float(np.abs(g - s).max()) for g, s in zip(jax.tree.leaves(got),
                                                       jax.tree.leaves(students[-1])))
  assert lag > 1e-3  # the teacher trails the student: an EMA, not a copy
  assert np.abs(jax.device_get(state["objectives"]["dino"]["center"])).max() > 0
