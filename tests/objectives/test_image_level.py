"""NT-Xent against a numpy computation written out term by term."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from medjax.objectives import image_level

CFG = ml_collections.ConfigDict(dict(weight=1.0, tau=0.5))


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _nt_xent(v1, v2, tau):
  """SimCLR's loss: mean over all 2n views of -log(e^{s(i, pos)} / sum_{k != i} e^{s(i, k)})."""
  z = np.concatenate([v1, v2])
  n = len(z)
  total = 0.0
  for i in range(n):
    pos = (i + n // 2) % n
    denominator = sum(np.exp(z[i] @ z[k] / tau) for k in range(n) if k != i)
    total += -np.log(np.exp(z[i] @ z[pos] / tau) / denominator)
  return total / n


def _run(v1, v2, has_image):
  outputs = dict(view_emb=jnp.asarray(v1, jnp.float32), view2_emb=jnp.asarray(v2, jnp.float32))
  return image_level.loss(outputs, dict(has_image=np.asarray(has_image, bool)), CFG)


def test_matches_hand_computation_on_the_rows_with_an_image():
  v1 = _unit([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
  v2 = _unit([[0.9, 0.1, 0], [0.2, 1, 0], [5, 5, 5], [0, 1, 1]])
  has_image = [True, True, False, True]
  keep = np.flatnonzero(has_image)
  value, metrics = _run(v1, v2, has_image)
  np.testing.assert_allclose(value, _nt_xent(v1[keep], v2[keep], 0.5), rtol=1e-5)
  assert metrics["images"] == 3
  # Every view's nearest other view is its partner here, except row 3's two views.
  sims = np.concatenate([v1[keep], v2[keep]]) @ np.concatenate([v1[keep], v2[keep]]).T
  np.fill_diagonal(sims, -np.inf)
  expected_top1 = np.mean(np.argmax(sims, 1) == (np.arange(6) + 3) % 6)
  np.testing.assert_allclose(metrics["top1"], expected_top1, rtol=1e-6)


def test_one_image_has_only_its_partner_as_candidate():
  value, metrics = _run(_unit([[1, 0], [0, 1]]), _unit([[0, 1], [1, 0]]), [True, False])
  np.testing.assert_allclose(value, 0.0, atol=1e-6)
  assert metrics["top1"] == 1.0


def test_no_image_gives_zero_loss_and_finite_grads():
  v = _unit([[1, 0], [0, 1]]).astype(np.float32)
  value, _ = _run(v, v, [False, False])
  assert float(value) == 0.0
  grads = jax.grad(lambda a, b: _run(a, b, [False, False])[0], argnums=(0, 1))(v, v)
  assert all(np.all(g == 0) for g in grads)
