"""Findings-impression InfoNCE: valid rows only, in numerators and denominators."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from medjax.objectives import findings_impression

CFG = ml_collections.ConfigDict(dict(weight=1.0, tau=0.25))


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _log_softmax(x, axis):
  x = x - x.max(axis=axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def _run(f, i, valid):
  outputs = dict(findings_emb=jnp.asarray(f, jnp.float32),
                 impression_emb=jnp.asarray(i, jnp.float32))
  return findings_impression.loss(
      outputs, dict(has_findings_impression=np.asarray(valid, bool)), CFG)


F = _unit([[1, 0, 0], [0, 1, 0], [0.6, 0.8, 0], [0, 0, 1]])
I = _unit([[0.8, 0.6, 0], [0, 1, 0.2], [1, 1, 1], [0.1, 0, 1]])


def test_symmetric_infonce_over_valid_rows():
  valid = [True, True, False, True]
  keep = np.flatnonzero(valid)
  logits = F[keep] @ I[keep].T / 0.25
  expected = -0.5 * (np.mean(np.diag(_log_softmax(logits, 1)))
                     + np.mean(np.diag(_log_softmax(logits, 0))))
  value, metrics = _run(F, I, valid)
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  assert metrics["pairs"] == 3
  # The excluded row is not a negative either: moving it changes nothing.
  moved_f, moved_i = F.copy(), I.copy()
  moved_f[2], moved_i[2] = F[0], I[0]
  np.testing.assert_allclose(_run(moved_f, moved_i, valid)[0], value, rtol=1e-6)


def test_no_valid_row_gives_zero_loss_and_finite_grads():
  value, metrics = _run(F, I, [False] * 4)
  assert float(value) == 0.0 and metrics["pairs"] == 0
  grads = jax.grad(lambda f, i: _run(f, i, [False] * 4)[0], argnums=(0, 1))(
      F.astype(np.float32), I.astype(np.float32))
  assert all(np.all(g == 0) for g in grads)
