"""MAE loss: mean squared error on hidden patches of rows with an image."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from medjax.objectives import mae

CFG = ml_collections.ConfigDict(dict(weight=1.0))


def _run(pred, target, mask, has_image):
  outputs = dict(mae_pred=jnp.asarray(pred, jnp.float32),
                 mae_target=jnp.asarray(target, jnp.float32), mae_mask=np.asarray(mask, np.float32))
  return mae.loss(outputs, dict(has_image=np.asarray(has_image, bool)), CFG)


RNG = np.random.default_rng(2)
PRED, TARGET = RNG.normal(size=(2, 2, 4, 3))  # [B=2, N=4, patch_dim=3] each
MASK = np.array([[1, 0, 1, 1], [0, 1, 1, 0]])


def test_mean_over_hidden_patches_of_the_per_patch_mse():
  value, metrics = _run(PRED, TARGET, MASK, [True, True])
  err = ((PRED - TARGET) ** 2).mean(-1)
  expected = (err[0, 0] + err[0, 2] + err[0, 3] + err[1, 1] + err[1, 2]) / 5
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  assert metrics["patches"] == 5


def test_kept_patches_and_imageless_rows_do_not_count():
  value, _ = _run(PRED, TARGET, MASK, [True, False])
  pred = PRED.copy()
  pred[0, 1] += 100.0  # a kept patch of row 0
  pred[1] += 100.0  # row 1 has no image
  np.testing.assert_allclose(_run(pred, TARGET, MASK, [True, False])[0], value, rtol=1e-6)
  err = ((PRED[0] - TARGET[0]) ** 2).mean(-1)
  np.testing.assert_allclose(value, err[[0, 2, 3]].mean(), rtol=1e-5)


def test_no_image_gives_zero_loss_and_finite_grads():
  value, metrics = _run(PRED, TARGET, MASK, [False, False])
  assert float(value) == 0.0 and metrics["patches"] == 0
  grad = jax.grad(lambda p: _run(p, TARGET, MASK, [False, False])[0])(PRED.astype(np.float32))
  assert np.all(grad == 0)
