"""Teacher-forced captioning cross-entropy, image-text pairs only."""
import ml_collections
import numpy as np

from medjax.objectives import captioning

CFG = ml_collections.ConfigDict(dict(weight=1.0))


def _ce(logits, target):
  return np.log(np.sum(np.exp(logits))) - logits[target]


def _run(logits, ids, has_image, has_text):
  batch = dict(text_ids=np.asarray(ids, np.int32), text_mask=np.asarray(ids) > 0,
               has_image=np.asarray(has_image, bool), has_text=np.asarray(has_text, bool))
  return captioning.loss(dict(caption_logits=np.asarray(logits, np.float32)), batch, CFG)


LOGITS = np.random.default_rng(1).normal(size=(3, 5, 6))
IDS = np.array([[1, 5, 3, 2, 0], [1, 4, 2, 0, 0], [1, 3, 3, 3, 2]])


def test_pairs_only_and_padding_ignored():
  # Row 1 is text-only, row 2 image-only (its ids are whatever the pipeline left there).
  value, metrics = _run(LOGITS, IDS, [True, False, True], [True, True, False])
  terms = [_ce(LOGITS[0, 0], 5), _ce(LOGITS[0, 1], 3), _ce(LOGITS[0, 2], 2)]
  np.testing.assert_allclose(value, np.mean(terms), rtol=1e-5)
  assert metrics["tokens"] == 3
  perfect = np.full_like(LOGITS, -10.0)
  for t in range(4):
    perfect[0, t, IDS[0, t + 1]] = 10.0
  np.testing.assert_allclose(_run(perfect, IDS, [True] * 3, [True, 0, 0])[1]["accuracy"], 1.0)


def test_no_pair_gives_zero_not_nan():
  value, metrics = _run(LOGITS, IDS, [True, False, False], [False, True, False])
  assert float(value) == 0.0 and metrics["tokens"] == 0
