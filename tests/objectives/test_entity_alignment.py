"""Soft image-text alignment with entity targets, against numpy."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from medjax.objectives import entity_alignment

CFG = ml_collections.ConfigDict(dict(weight=1.0, tau_target=0.5))
SCALE = 4.0


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


def _direction(logits, ents, other_ents, valid, other_valid, tau):
  """Mean over usable anchors of -sum_j target_j log p_j, columns = valid other rows only."""
  cols = np.flatnonzero(other_valid)
  losses = []
  for i in np.flatnonzero(valid):
    if ents[i].sum() == 0:
      if not other_valid[i]:
        continue  # identity target, but the anchor has no pair
      target = (cols == i).astype(float)
    else:
      cos = [ents[i] @ other_ents[j] / np.linalg.norm(ents[i])
             / max(np.linalg.norm(other_ents[j]), 1e-300) for j in cols]
      target = _softmax(np.array(cos) / tau)
    logp = np.log(_softmax(logits[i, cols]))
    losses.append(-(target * logp).sum())
  return np.mean(losses) if losses else 0.0


def _reference(img, txt, e_img, e_txt, has_image, has_text):
  logits = SCALE * img @ txt.T
  i2t = _direction(logits, e_img, e_txt, has_image, has_text, 0.5)
  t2i = _direction(logits.T, e_txt, e_img, has_text, has_image, 0.5)
  return 0.5 * (i2t + t2i)


def _run(img, txt, e_img, e_txt, has_image, has_text):
  outputs = dict(image_emb=jnp.asarray(img, jnp.float32), text_emb=jnp.asarray(txt, jnp.float32),
                 logit_scale=np.float32(np.log(SCALE)))
  batch = dict(image_entities=np.asarray(e_img, np.float32),
               text_entities=np.asarray(e_txt, np.float32),
               has_image=np.asarray(has_image, bool), has_text=np.asarray(has_text, bool))
  return entity_alignment.loss(outputs, batch, CFG)


IMG = _unit([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
TXT = _unit([[0.9, 0.1, 0], [0, 1, 1], [0.2, 0, 1], [1, 0, 1]])
E_IMG = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]], float)
E_TXT = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]], float)


def test_soft_targets_on_paired_rows():
  ones = [True] * 4
  value, metrics = _run(IMG, TXT, E_IMG, E_TXT, ones, ones)
  np.testing.assert_allclose(value, _reference(IMG, TXT, E_IMG, E_TXT, ones, ones), rtol=1e-5)
  assert metrics["image_rows"] == metrics["text_rows"] == 4


def test_unpaired_rows_take_part_on_their_own_side():
  # Row 1: image only; row 3: text only; row 2's image has no entity and no pair -> left out.
  has_image, has_text = [True, True, True, False], [True, False, False, True]
  e_txt = E_TXT.copy()
  e_txt[3] = [0, 1, 1, 0]
  value, metrics = _run(IMG, TXT, E_IMG, e_txt, has_image, has_text)
  np.testing.assert_allclose(value, _reference(IMG, TXT, E_IMG, e_txt, has_image, has_text),
                             rtol=1e-5)
  assert metrics["image_rows"] == 2 and metrics["text_rows"] == 2


def test_rows_without_entities_fall_back_to_paired_infonce():
  none = np.zeros((4, 4))
  value, _ = _run(IMG, TXT, none, none, [True] * 4, [True] * 4)
  logits = SCALE * IMG @ TXT.T
  log_sm = lambda x: x - np.log(np.exp(x).sum(1, keepdims=True))
  expected = -0.5 * (np.mean(np.diag(log_sm(logits))) + np.mean(np.diag(log_sm(logits.T))))
  np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_nothing_usable_gives_zero_loss_and_finite_grads():
  none = np.zeros((4, 4))
  args = (none, none, [True, True, False, False], [False, False, True, True])
  value, metrics = _run(IMG, TXT, *args)  # no entities and no pairs: no identity target
  assert float(value) == 0.0 and metrics["image_rows"] == 0
  value, _ = _run(IMG, TXT, E_IMG, E_TXT, [False] * 4, [False] * 4)
  assert float(value) == 0.0
  grads = jax.grad(lambda a, b: _run(a, b, *args)[0], argnums=(0, 1))(
      IMG.astype(np.float32), TXT.astype(np.float32))
  assert all(np.all(np.isfinite(g)) and np.all(g == 0) for g in grads)
