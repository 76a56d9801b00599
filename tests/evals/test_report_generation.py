"""Report generation: greedy decoding on the real sample, and the scores on hand-made cases."""
import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from medjax.data import pipeline
from medjax.evals import report_generation
from medjax.train import weights


def test_text_scores_on_hand_computed_cases():
  ref = "the cat sat on the mat"
  # 6 tokens each (no brevity penalty); 1- to 4-gram matches 5/6, 3/5, 2/4, 1/3; the longest
  # common subsequence is 5 words long, so ROUGE-L precision = recall = 5/6.
  got = report_generation.text_scores([ref], ["The cat sat on a mat"])
  p = [5 / 6, 3 / 5, 2 / 4, 1 / 3]
  for n in range(1, 5):
    assert got[f"bleu{n}"] == pytest.approx(math.prod(p[:n]) ** (1 / n))
  assert got["rougeL"] == pytest.approx(5 / 6)
  # A 3-word prefix: every n-gram matches, but the brevity penalty is exp(1 - 6/3); ROUGE-L
  # recall is 3/6, so F1 = 2/3. BLEU-3 has one 3-gram; with no 4-gram BLEU-4 is 0.
  short = report_generation.text_scores([ref], ["the cat sat"])
  assert short["bleu1"] == short["bleu2"] == short["bleu3"] == pytest.approx(math.exp(-1))
  assert short["bleu4"] == 0.0 and short["rougeL"] == pytest.approx(2 / 3)
  # A corpus pools the n-gram counts of its reports (and the case is ignored): with a second,
  # exact 3-word report the matches are (5+3)/(6+3), (3+2)/(5+2), (2+1)/(4+1), (1+0)/(3+0).
  pair = report_generation.text_scores([ref, "no acute findings"],
                                       ["The cat sat on a mat", "No Acute Findings"])
  p = [8 / 9, 5 / 7, 3 / 5, 1 / 3]
  for n in range(1, 5):
    assert pair[f"bleu{n}"] == pytest.approx(math.prod(p[:n]) ** (1 / n))
  assert pair["rougeL"] == pytest.approx((5 / 6 + 1) / 2)  # ROUGE-L: the mean over reports
  with pytest.raises(ValueError, match="1 references for 2 hypotheses"):
    report_generation.text_scores([ref], [ref, ref])


def test_greedy_reports_on_the_real_sample(tiny_config, tiny_run):
  config, length = tiny_config, 12
  summary, generated, references = report_generation.run(config, str(tiny_run), length=length)
  images, texts = report_generation.paired_images(config, "covid_cxr", "validation")
  assert summary["images"] == len(images) == len(generated) > 0 and references == texts
  for scores in (summary["generated"], summary["nearest_train_report"]):
    assert set(scores) == {"bleu1", "bleu2", "bleu3", "bleu4", "rougeL"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
  # Real train reports share words with the real validation ones.
  assert summary["nearest_train_report"]["bleu1"] > 0.1

  # Each generated token is the argmax of the decoder run once over the whole sequence
  # (teacher forcing on its own output): the step-by-step loop decodes what the model says.
  ts, params = weights.load_model(config, str(tiny_run))
  graphdef = ts.graphdef
  tokenizer = pipeline.load_tokenizer(config.data)
  ids = report_generation.generate(graphdef, params, images[:8], tokenizer, length)
  assert [tokenizer.decode(row) for row in ids] == generated[:8]
  model = nnx.merge(graphdef, params)
  logits = model.decode(jnp.asarray(ids), jnp.ones(ids.shape, bool),
                        model.encode_image(images[:8])[0])
  assert (ids[:, 0] == tokenizer.bos_id).all()
  for row, row_logits in zip(ids, np.asarray(logits)):
    ended = np.flatnonzero(row == tokenizer.eos_id)
    stop = ended[0] if len(ended) else length - 1
    real = row_logits[:stop, :tokenizer.vocab_size]  # the tiny model's vocabulary is padded
    np.testing.assert_array_equal(row[1:stop + 1], real.argmax(-1))
    assert (row[stop + 1:] == tokenizer.pad_id).all()  # nothing after EOS
  with pytest.raises(ValueError, match="model.decoder.max_len"):
    report_generation.run(config, str(tiny_run), length=config.model.decoder.max_len + 1)
  with pytest.raises(ValueError, match="retrieves train reports"):
    report_generation.run(config, str(tiny_run), split="train")
