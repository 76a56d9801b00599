"""Next-token cross-entropy on the hidden sentence, rows with has_sentence only."""
import ml_collections
import numpy as np

from medjax.objectives import sentence_reconstruction

CFG = ml_collections.ConfigDict(dict(weight=1.0))


def _ce(logits, target):
  return np.log(np.sum(np.exp(logits))) - logits[target]


def _run(logits, ids, mask, has_sentence):
  batch = dict(sr_target_ids=np.asarray(ids, np.int32), sr_target_mask=np.asarray(mask, bool),
               has_sentence=np.asarray(has_sentence, bool))
  return sentence_reconstruction.loss(dict(sr_logits=np.asarray(logits, np.float32)), batch,
                                      CFG)


RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(3, 4, 5))
IDS = np.array([[1, 3, 4, 2], [1, 2, 0, 0], [1, 4, 4, 2]])  # BOS=1 ... EOS=2, pad 0
MASK = IDS > 0


def test_logit_t_predicts_token_t_plus_one_over_real_tokens():
  value, metrics = _run(LOGITS, IDS, MASK, [True, True, False])
  # Row 0: targets 3, 4, 2 at t = 0, 1, 2. Row 1: only EOS at t = 0; pads do not count.
  terms = [_ce(LOGITS[0, 0], 3), _ce(LOGITS[0, 1], 4), _ce(LOGITS[0, 2], 2),
           _ce(LOGITS[1, 0], 2)]
  np.testing.assert_allclose(value, np.mean(terms), rtol=1e-5)
  assert metrics["tokens"] == 4


def test_no_sentence_gives_zero_not_nan():
  value, metrics = _run(LOGITS, IDS, MASK, [False] * 3)
  assert float(value) == 0.0 and metrics["tokens"] == 0
