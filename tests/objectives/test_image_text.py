"""Contrastive losses against cases worked out by hand (numpy, independent of the JAX code)."""
import ml_collections
import numpy as np
import pytest

from medjax.objectives import image_text


def _outputs(img, txt, scale=1.0, bias=0.0):
  return dict(image_emb=np.asarray(img, np.float32), text_emb=np.asarray(txt, np.float32),
              logit_scale=np.float32(np.log(scale)), logit_bias=np.float32(bias))


def _cfg(kind, tau=0.0, i2t_weight=0.5):
  return ml_collections.ConfigDict(dict(weight=1.0, kind=kind, tau=tau, i2t_weight=i2t_weight))


def _batch(n, has_image=None, has_text=None):
  full = np.ones(n, bool)
  return dict(has_image=full if has_image is None else np.asarray(has_image, bool),
              has_text=full if has_text is None else np.asarray(has_text, bool))


def _log_softmax(x, axis):
  x = x - x.max(axis=axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def test_clip_matches_hand_computation():
  img = np.array([[1, 0], [0, 1], [0.6, 0.8]])
  txt = np.array([[1, 0], [0.6, 0.8], [0, 1]])  # rows 1 and 2 swapped: two mismatched pairs
  sim = 10.0 * img @ txt.T
  expected = -0.5 * (np.mean(np.diag(_log_softmax(sim, 1)))
                     + np.mean(np.diag(_log_softmax(sim, 0))))
  value, metrics = image_text.loss(_outputs(img, txt, scale=10.0), _batch(3), _cfg("clip"))
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  # Image 1 ([0,1]) best matches text 2 ([0,1]), not its own: top-1 is 1/3 (row 0 only).
  np.testing.assert_allclose(metrics["i2t_top1"], 1 / 3, rtol=1e-6)


def test_clip_uniform_logits_give_log_batch():
  # Identical embeddings carry no information: the loss is exactly ln(batch).
  emb = np.tile([[1.0, 0.0]], (4, 1))
  value, _ = image_text.loss(_outputs(emb, emb, scale=5.0), _batch(4), _cfg("clip"))
  np.testing.assert_allclose(value, np.log(4), rtol=1e-6)


def test_clip_temperature_is_capped_at_100():
  img = np.eye(3)
  capped, _ = image_text.loss(_outputs(img, img, scale=1000.0), _batch(3), _cfg("clip"))
  at_cap, _ = image_text.loss(_outputs(img, img, scale=100.0), _batch(3), _cfg("clip"))
  np.testing.assert_allclose(capped, at_cap, rtol=1e-6)


def test_siglip_matches_hand_computation():
  img = np.array([[1, 0], [0, 1]])
  txt = np.array([[0.6, 0.8], [0, 1]])
  logits = 2.0 * img @ txt.T - 1.0
  signs = 2 * np.eye(2) - 1
  expected = np.sum(np.log1p(np.exp(-signs * logits))) / 2
  value, _ = image_text.loss(_outputs(img, txt, scale=2.0, bias=-1.0), _batch(2),
                             _cfg("siglip"))
  np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_unknown_kind_is_a_clear_error():
  with pytest.raises(ValueError, match="image_text.kind = 'softmax'"):
    image_text.loss(_outputs(np.eye(2), np.eye(2)), _batch(2), _cfg("softmax"))


def test_clip_uses_only_pairs_and_convirt_weighting():
  img = np.array([[1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6]])
  txt = np.array([[1, 0], [0.6, 0.8], [0, 1], [1, 0]])
  # Row 1 has no text, row 3 no image: only rows 0 and 2 form pairs.
  batch = _batch(4, has_image=[1, 1, 1, 0], has_text=[1, 0, 1, 1])
  sim = 10.0 * img[[0, 2]] @ txt[[0, 2]].T  # tau 0.1, fixed
  i2t = -np.mean(np.diag(_log_softmax(sim, 1)))
  t2i = -np.mean(np.diag(_log_softmax(sim, 0)))
  value, metrics = image_text.loss(_outputs(img, txt, scale=3.0), batch,
                                   _cfg("clip", tau=0.1, i2t_weight=0.75))
  np.testing.assert_allclose(value, 0.75 * i2t + 0.25 * t2i, rtol=1e-5)
  np.testing.assert_allclose(metrics["temperature"], 0.1, rtol=1e-6)
  assert metrics["pairs"] == 2


def test_siglip_uses_only_pairs():
  img = np.array([[1, 0], [0, 1], [0.6, 0.8]])
  txt = np.array([[0.6, 0.8], [0, 1], [1, 0]])
  batch = _batch(3, has_image=[1, 1, 0], has_text=[1, 1, 1])
  logits = 2.0 * img[:2] @ txt[:2].T - 1.0
  signs = 2 * np.eye(2) - 1
  expected = np.sum(np.log1p(np.exp(-signs * logits))) / 2
  value, _ = image_text.loss(_outputs(img, txt, scale=2.0, bias=-1.0), batch, _cfg("siglip"))
  np.testing.assert_allclose(value, expected, rtol=1e-5)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_no_pairs_gives_zero_not_nan(kind):
  batch = _batch(3, has_image=[1, 0, 1], has_text=[0, 1, 0])
  value, metrics = image_text.loss(_outputs(np.eye(3), np.eye(3)), batch, _cfg(kind))
  assert float(value) == 0.0 and float(metrics["i2t_top1"]) == 0.0
