"""Report generation: the scores on hand-made cases, beam search on a crafted chain, and
fine-tuning, greedy and beam decoding on the real sample."""
import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from medjax.evals import report_generation, report_metrics
from medjax.models import decoding
from medjax.train import weights


def test_text_scores_on_hand_computed_cases():
  ref = "the cat sat on the mat"
  # 6 tokens each (no brevity penalty); 1- to 4-gram matches 5/6, 3/5, 2/4, 1/3; the longest
  # common subsequence is 5 words long, so ROUGE-L precision = recall = 5/6.
  got = report_metrics.text_scores([ref], ["The cat sat on a mat"])
  p = [5 / 6, 3 / 5, 2 / 4, 1 / 3]
  for n in range(1, 5):
    assert got[f"bleu{n}"] == pytest.approx(math.prod(p[:n]) ** (1 / n))
  assert got["rougeL"] == pytest.approx(5 / 6)
  # A 3-word prefix: every n-gram matches, but the brevity penalty is exp(1 - 6/3); ROUGE-L
  # recall is 3/6, so F1 = 2/3. BLEU-3 has one 3-gram; with no 4-gram BLEU-4 is 0.
  short = report_metrics.text_scores([ref], ["the cat sat"])
  assert short["bleu1"] == short["bleu2"] == short["bleu3"] == pytest.approx(math.exp(-1))
  assert short["bleu4"] == 0.0 and short["rougeL"] == pytest.approx(2 / 3)
  # A corpus pools the n-gram counts of its reports (and the case is ignored): with a second,
  # exact 3-word report the matches are (5+3)/(6+3), (3+2)/(5+2), (2+1)/(4+1), (1+0)/(3+0).
  pair = report_metrics.text_scores([ref, "no acute findings"],
                                    ["The cat sat on a mat", "No Acute Findings"])
  p = [8 / 9, 5 / 7, 3 / 5, 1 / 3]
  for n in range(1, 5):
    assert pair[f"bleu{n}"] == pytest.approx(math.prod(p[:n]) ** (1 / n))
  assert pair["rougeL"] == pytest.approx((5 / 6 + 1) / 2)  # ROUGE-L: the mean over reports
  with pytest.raises(ValueError, match="1 references for 2 hypotheses"):
    report_metrics.text_scores([ref], [ref, ref])


def test_cider_on_a_corpus_counted_by_hand():
  # Two reports sharing no word: every n-gram occurs in one of the 2 references, so its TF-IDF
  # weight is log(2 / 1) and an exact copy has cosine 1 for 1- and 2-grams; 3- and 4-grams do
  # not exist (cosine 0). CIDEr = 10 x mean over n = 1..4 = 10 x (1 + 1 + 0 + 0) / 4 = 5.
  assert report_metrics.cider(["Heart normal", "lungs clear"], ["heart NORMAL", "lungs clear"]) \
      == pytest.approx(5.0)
  # "heart clear" for "heart normal": the unigram vectors (w, w, 0) and (w, 0, w) have cosine
  # 1/2, no bigram matches: 10 x (1/2) / 4 = 1.25 for that report, and the corpus mean is
  # (1.25 + 5) / 2.
  assert report_metrics.cider(["heart normal", "lungs clear"], ["heart clear", "lungs clear"]) \
      == pytest.approx(3.125)
  # One reference alone: each n-gram is in every reference, so its IDF (hence CIDEr) is 0.
  assert report_metrics.cider(["heart normal"], ["heart normal"]) == 0.0


def test_clinical_efficacy_counted_by_hand(shared_data):  # the lexicon is in the shared data
  references = ["Small left pleural effusion. No pneumothorax.",  # effusion (pneumothorax: no)
                "Cardiomegaly with pulmonary edema.",  # cardiomegaly, edema
                "No acute cardiopulmonary abnormality.",  # no finding
                "Right lower lobe consolidation."]  # consolidation
  hypotheses = ["Left pleural effusion and a right pneumothorax.",  # effusion, pneumothorax
                "Cardiomegaly. Possible edema.",  # cardiomegaly; edema uncertain: absent
                "The lungs are clear.",  # no finding
                "Consolidation cannot be excluded."]  # uncertain: absent, and not normal
  got = report_metrics.clinical_efficacy(references, hypotheses)
  # 5 present in the references, 4 in the hypotheses, 3 in both (effusion, cardiomegaly, no
  # finding): precision 3/4, recall 3/5, F1 2 x 0.75 x 0.6 / 1.35 = 2/3.
  assert got["precision"] == pytest.approx(3 / 4) and got["recall"] == pytest.approx(3 / 5)
  assert got["f1"] == pytest.approx(2 / 3)
  per = got["per_observation"]
  assert per["pleural_effusion"] == dict(precision=1.0, recall=1.0, f1=1.0, support=1)
  assert per["pneumothorax"] == dict(precision=0.0, recall=0.0, f1=0.0, support=0)  # a false hit
  assert per["edema"]["recall"] == per["consolidation"]["recall"] == 0.0
  assert sum(v["support"] for v in per.values()) == 5


# A chain over 6 ids (pad 0, unk 1, bos 2, eos 3, "a" 4, "b" 5): the next token depends on the
# last one only. After BOS: a 0.6, b 0.4; after a: eos 0.3 at best; after b: eos 0.99.
PAD, BOS, EOS, A, B = 0, 2, 3, 4, 5
CHAIN = np.full((6, 6), 1e-4)
CHAIN[BOS, [A, B]] = [0.6, 0.4]
CHAIN[A, [EOS, A, B, 1]] = [0.3, 0.25, 0.25, 0.2]
CHAIN[B, EOS] = 0.99
CHAIN[[PAD, 1, EOS]] = 1 / 6
CHAIN /= CHAIN.sum(axis=1, keepdims=True)


def _chain_logits(ids, t):
  return jnp.log(jnp.asarray(CHAIN, jnp.float32))[ids[:, t]]


def test_beam_search_finds_the_likelier_report_greedy_misses():
  greedy = decoding.greedy(_chain_logits, 1, 5, BOS, EOS, PAD)
  # Greedy takes "a" (0.6), then EOS (0.3): probability 0.18.
  np.testing.assert_array_equal(greedy, [[BOS, A, EOS, PAD, PAD]])
  one, _ = decoding.beam_search(_chain_logits, 1, 5, 1, BOS, EOS, PAD)
  np.testing.assert_array_equal(one, greedy)
  # A beam of 2 keeps "b" (0.4) and finds "b" EOS: 0.4 x 0.99 = 0.396 > 0.18.
  ids, logp = decoding.beam_search(_chain_logits, 1, 5, 2, BOS, EOS, PAD)
  np.testing.assert_array_equal(ids, [[BOS, B, EOS, PAD, PAD]])
  assert float(logp[0]) == pytest.approx(math.log(CHAIN[BOS, B] * CHAIN[B, EOS]), abs=1e-5)
  assert CHAIN[BOS, B] * CHAIN[B, EOS] > CHAIN[BOS, A] * CHAIN[A, EOS]


def test_reports_on_the_real_sample(tiny_config, tiny_run):
  config, length = tiny_config, 12
  summary, texts = report_generation.run(config, str(tiny_run), fractions=(0.0, 0.1),
                                         length=length, beam=2, steps=8, lr=1e-3, batch_size=8)
  scored = report_generation.paired_rows(config, "covid_cxr", "validation")
  train = report_generation.paired_rows(config, "covid_cxr", "train")
  assert summary["images"] == len(scored.texts) > 0 and texts["reference"] == scored.texts
  assert set(texts) == {"reference", "0.0/greedy", "0.0/beam", "0.1/greedy", "0.1/beam"}
  for row in list(summary["fractions"].values()) + [dict(greedy=summary["nearest_train_report"])]:
    for name in ("greedy", "beam"):
      if name in row:
        scores = row[name]
        assert {"bleu4", "rougeL", "cider", "clinical"} <= set(scores)
        assert all(0.0 <= scores[k] <= 1.0 for k in ("bleu1", "bleu4", "rougeL"))
        assert 0.0 <= scores["clinical"]["f1"] <= 1.0 and scores["cider"] >= 0.0
  # Fine-tuning on 10% of the train patients' pairs lowers the captioning loss on them.
  tenth = summary["fractions"]["0.1"]
  patients = len(set(train.patients))
  assert abs(tenth["train_patients"] - round(0.1 * patients)) <= 1
  assert tenth["train_caption_loss"]["after"] < tenth["train_caption_loss"]["before"]
  assert "train_caption_loss" not in summary["fractions"]["0.0"]
  assert texts["0.1/greedy"] != texts["0.0/greedy"]  # the fine-tuned decoder writes otherwise

  # Each greedy token is the argmax of the decoder run once over the whole sequence (teacher
  # forcing on its own output): the step-by-step loop decodes what the model says.
  ts, params = weights.load_model(config, str(tiny_run))
  tokenizer = weights.load_tokenizer(config, str(tiny_run))
  images = scored.images[:32]  # one batch: the shape `run` compiled for
  ids = report_generation.generate(ts.graphdef, params, images, tokenizer, length)
  assert [tokenizer.decode(row) for row in ids] == texts["0.0/greedy"][:32]
  model = nnx.merge(ts.graphdef, params)
  logits = model.decode(jnp.asarray(ids[:8]), jnp.ones(ids[:8].shape, bool),
                        model.encode_image(images[:8])[0])
  assert (ids[:, 0] == tokenizer.bos_id).all()
  for row, row_logits in zip(ids[:8], np.asarray(logits)):
    ended = np.flatnonzero(row == tokenizer.eos_id)
    stop = ended[0] if len(ended) else length - 1
    real = row_logits[:stop, :tokenizer.vocab_size]  # the tiny model's vocabulary is padded
    np.testing.assert_array_equal(row[1:stop + 1], real.argmax(-1))
    assert (row[stop + 1:] == tokenizer.pad_id).all()  # nothing after EOS
  # A beam of one is greedy decoding; the beam-2 texts are what the summary scored.
  np.testing.assert_array_equal(report_generation.generate(
      ts.graphdef, params, images, tokenizer, length, beam=1), ids)
  beam = report_generation.generate(ts.graphdef, params, images, tokenizer, length, beam=2)
  assert [tokenizer.decode(row) for row in beam] == texts["0.0/beam"][:32]
  with pytest.raises(ValueError, match="model.decoder.max_len"):
    report_generation.run(config, str(tiny_run), length=config.model.decoder.max_len + 1)
  with pytest.raises(ValueError, match="read train reports"):
    report_generation.run(config, str(tiny_run), split="train")
