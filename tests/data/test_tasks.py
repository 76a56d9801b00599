"""Host-side self-supervision targets: masking statistics, clinical sentence splitting."""
import numpy as np
import pytest

from medjax.data import tasks
from medjax.data.tokenizer import MASK

PAD, UNK, BOS, EOS, MASK_ID = 0, 1, 2, 3, 4
SPECIAL = (PAD, UNK, BOS, EOS, MASK_ID)


def _sequence(n_real: int, length: int, rng) -> tuple[np.ndarray, np.ndarray]:
  ids = np.zeros(length, np.int32)
  ids[:n_real + 2] = [BOS, *rng.integers(5, 100, n_real), EOS]
  return ids, np.arange(length) < n_real + 2


def _mask(ids, mask, seed=0, **kw):
  return tasks.mask_tokens(ids, mask, np.random.default_rng(seed), vocab_size=100,
                           mask_id=MASK_ID, special_ids=SPECIAL, **kw)


def test_mask_tokens_chooses_15_percent_of_real_tokens_only():
  ids, mask = _sequence(40, 64, np.random.default_rng(0))
  out, targets, weights = _mask(ids, mask)
  chosen = weights > 0
  assert chosen.sum() == 6  # round(0.15 * 40)
  assert not chosen[0] and not chosen[41:].any()  # never BOS, EOS or padding
  np.testing.assert_array_equal(targets[chosen], ids[chosen])
  assert not targets[~chosen].any()
  np.testing.assert_array_equal(out[~chosen], ids[~chosen])
  assert (out.dtype, targets.dtype, weights.dtype) == (np.int32, np.int32, np.float32)


def test_mask_tokens_80_10_10_and_random_tokens_are_never_special():
  rng = np.random.default_rng(1)
  counts = np.zeros(3)
  for seed in range(3000):
    ids, mask = _sequence(60, 64, rng)
    out, _, weights = _mask(ids, mask, seed)
    chosen = weights > 0
    masked = out[chosen] == MASK_ID
    kept = out[chosen] == ids[chosen]
    counts += [masked.sum(), (~masked & ~kept).sum(), kept.sum()]
    assert not np.isin(out[chosen & (out != MASK_ID)], SPECIAL).any()
    assert (out[chosen] < 100).all()
  # A random draw equal to the original token counts as kept: ~1% of the 10%.
  np.testing.assert_allclose(counts / counts.sum(), [0.8, 0.1, 0.1], atol=0.01)


def test_mask_tokens_picks_one_token_of_a_short_text_and_none_of_an_empty_one():
  ids, mask = _sequence(2, 8, np.random.default_rng(0))
  assert _mask(ids, mask)[2].sum() == 1
  ids, mask = _sequence(0, 8, np.random.default_rng(0))
  out, targets, weights = _mask(ids, mask)
  assert not weights.any() and not targets.any()
  np.testing.assert_array_equal(out, ids)


def test_mask_tokens_is_deterministic_from_the_generator():
  ids, mask = _sequence(50, 64, np.random.default_rng(0))
  a, b, c = _mask(ids, mask, 7), _mask(ids, mask, 7), _mask(ids, mask, 8)
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not np.array_equal(a[2], c[2])


def test_non_special_mapping_skips_every_special_id():
  draws = np.arange(100 - len(SPECIAL))
  mapped = tasks._non_special(draws, np.array(sorted(SPECIAL)))
  np.testing.assert_array_equal(mapped, np.arange(5, 100))


@pytest.mark.parametrize("text, expected", [
    ("Heart size is normal. No effusion.", ["Heart size is normal.", "No effusion."]),
    ("A 1.5 cm nodule in the RUL. Stable.", ["A 1.5 cm nodule in the RUL.", "Stable."]),
    ("Seen by Dr. Lee today. Discharged.", ["Seen by Dr. Lee today.", "Discharged."]),
    ("Opacities, e.g. in the bases. Follow up.", ["Opacities, e.g. in the bases.",
                                                  "Follow up."]),
    ("1. No pneumothorax. 2. Stable cardiomegaly.", ["1. No pneumothorax.",
                                                      "2. Stable cardiomegaly."]),
    ("IMPRESSION: 1. Small effusion. 2. Atelectasis.", ["IMPRESSION: 1. Small effusion.",
                                                        "2. Atelectasis."]),
    ("Findings:\n1. Clear lungs\n2. Normal heart", ["Findings:", "1. Clear lungs",
                                                    "2. Normal heart"]),
    ("Fever for 3 days. Is it viral? Yes!", ["Fever for 3 days.", "Is it viral?", "Yes!"]),
    ("Temperature 38. Admitted.", ["Temperature 38.", "Admitted."]),
    ("Given approx. two doses. Improved.", ["Given approx. two doses.", "Improved."]),
    ("Findings text\n\nImpression text", ["Findings text", "Impression text"]),
    ("", []),
    ("   ", []),
])
def test_split_sentences(text, expected):
  assert tasks.split_sentences(text) == expected


def test_hide_sentence_replaces_exactly_one_sentence():
  text = "One is here. Two is there. Three is last."
  seen = set()
  for seed in range(30):
    context, hidden = tasks.hide_sentence(text, np.random.default_rng(seed))
    assert context.count(MASK) == 1
    assert context.replace(MASK, hidden) == text
    seen.add(hidden)
  assert seen == {"One is here.", "Two is there.", "Three is last."}


def test_hide_sentence_respects_limit_and_needs_two_sentences():
  text = "One is here. Two is there. Three is last."
  hidden = {tasks.hide_sentence(text, np.random.default_rng(s), limit=1)[1] for s in range(10)}
  assert hidden == {"One is here."}
  assert tasks.hide_sentence("Only one sentence.", np.random.default_rng(0)) is None
  assert tasks.hide_sentence("", np.random.default_rng(0)) is None

