"""Supervised contrastive loss with the patient as label, against a numpy loop."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from medjax.objectives import patient_level

CFG = ml_collections.ConfigDict(dict(weight=1.0, tau=0.2))


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _supcon(z, patient, valid, tau):
  """Khosla et al. (2020), L_out, over valid rows; anchors = rows with a positive."""
  losses = []
  for i in np.flatnonzero(valid):
    others = [k for k in np.flatnonzero(valid) if k != i]
    positives = [p for p in others if patient[p] == patient[i]]
    if not positives:
      continue
    log_denominator = np.log(sum(np.exp(z[i] @ z[a] / tau) for a in others))
    losses.append(-np.mean([z[i] @ z[p] / tau - log_denominator for p in positives]))
  return np.mean(losses)


def _run(z, patient, has_image):
  batch = dict(patient=np.asarray(patient, np.int32), has_image=np.asarray(has_image, bool))
  return patient_level.loss(dict(view_emb=jnp.asarray(z, jnp.float32)), batch, CFG)


def test_matches_hand_computation_and_counts_rows_without_positive():
  z = _unit([[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0.6, 0.8], [0, 0, 1], [1, 1, 1]])
  patient = [7, 7, 3, 5, 5, 5]
  # Row 5 has no image: patient 5 keeps one positive pair (3, 4); patient 3 has one image only.
  has_image = [True, True, True, True, True, False]
  value, metrics = _run(z, patient, has_image)
  np.testing.assert_allclose(value, _supcon(z, patient, has_image, 0.2), rtol=1e-5)
  assert metrics["anchors"] == 4 and metrics["without_positive"] == 1


def test_several_positives_are_averaged_per_anchor():
  z = _unit([[1, 0], [0.6, 0.8], [0, 1], [-1, 0.2]])
  patient = [1, 1, 1, 2]
  value, metrics = _run(z, patient, [True] * 4)
  np.testing.assert_allclose(value, _supcon(z, patient, [True] * 4, 0.2), rtol=1e-5)
  assert metrics["anchors"] == 3 and metrics["without_positive"] == 1


def test_no_positive_anywhere_gives_zero_not_nan():
  z = _unit([[1, 0], [0, 1], [1, 1]]).astype(np.float32)
  value, metrics = _run(z, [1, 2, 3], [True] * 3)
  assert float(value) == 0.0 and metrics["anchors"] == 0 and metrics["without_positive"] == 3
  value, metrics = _run(z, [1, 1, 1], [False] * 3)
  assert float(value) == 0.0 and metrics["without_positive"] == 0
  grad = jax.grad(lambda z: _run(z, [1, 2, 3], [True] * 3)[0])(z)
  assert np.all(grad == 0)
