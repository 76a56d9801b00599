"""Masked-LM cross-entropy at the weighted positions."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from medjax.objectives import mlm

CFG = ml_collections.ConfigDict(dict(weight=1.0))


def _ce(logits, target):
  logits = np.asarray(logits, np.float64)
  return np.log(np.sum(np.exp(logits))) - logits[target]


def _run(logits, targets, weights):
  return mlm.loss(dict(mlm_logits=jnp.asarray(logits, jnp.float32)),
                  dict(mlm_targets=np.asarray(targets, np.int32),
                       mlm_weights=np.asarray(weights, np.float32)), CFG)


LOGITS = np.array([[[2.0, 0.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 3.0, 0.0, 0.0]],
                   [[0.5, 0.5, 2.0, 0.0], [np.inf, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 9.0]]])


def test_weighted_positions_only_normalised_by_the_weight_sum():
  targets = [[0, 0, 1], [2, 0, 3]]  # target 0 at unchosen (weight 0) positions, like padding
  weights = [[1, 0, 2], [1, 0, 0]]
  value, metrics = _run(LOGITS, targets, weights)
  # Position (1, 1) holds an inf logit: with weight 0 it must not reach the loss.
  expected = (_ce(LOGITS[0, 0], 0) + 2 * _ce(LOGITS[0, 2], 1) + _ce(LOGITS[1, 0], 2)) / 4
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["accuracy"], 1.0)  # all three are argmax hits
  assert metrics["tokens"] == 4


def test_zero_weights_give_zero_loss_and_finite_grads():
  logits = np.where(np.isfinite(LOGITS), LOGITS, 0.0).astype(np.float32)
  value, metrics = _run(logits, np.zeros((2, 3)), np.zeros((2, 3)))
  assert float(value) == 0.0 and metrics["tokens"] == 0 and float(metrics["accuracy"]) == 0.0
  grad = jax.grad(lambda x: _run(x, np.zeros((2, 3)), np.zeros((2, 3)))[0])(logits)
  assert np.all(grad == 0)
