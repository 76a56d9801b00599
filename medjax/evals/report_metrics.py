"""Scores of generated reports against one reference each, from maintained packages.

- BLEU-1..4 (sacrebleu: corpus level, lower-cased, its 13a tokens, no smoothing, as Papineni et
  al. count) and mean ROUGE-L F1 (rouge-score);
- CIDEr (pycocoevalcap's CIDEr-D: TF-IDF weighted 1-4-gram cosine, clipped, with its Gaussian
  length penalty and x10 scale; the IDF comes from the scored references themselves). Its
  tokens are sacrebleu's 13a tokens, lower-cased: pycocoevalcap's own tokenizer needs Java;
- clinical efficacy: the CheXpert observations (contract.CHEXPERT) medjax's entity extractor
  (data_prep/entities.py, with negation and uncertainty) finds present in each generated and
  reference text, compared as labels: micro precision / recall / F1 over all (text,
  observation) pairs, and per observation. Negated, uncertain and unmentioned count as absent.
"""
import numpy as np
from pycocoevalcap.cider.cider import Cider
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
from sklearn.metrics import precision_recall_fscore_support

from medjax import contract
from medjax.data_prep import entities


def _check(references: list[str], hypotheses: list[str]) -> None:
  if len(references) != len(hypotheses) or not references:
    raise ValueError(f"{len(references)} references for {len(hypotheses)} hypotheses")


def text_scores(references: list[str], hypotheses: list[str]) -> dict:
  """Corpus BLEU-1..4, mean ROUGE-L F1 and CIDEr of hypotheses against one reference each."""
  _check(references, hypotheses)
  out = {f"bleu{n}": BLEU(max_ngram_order=n, lowercase=True, smooth_method="none")
         .corpus_score(hypotheses, [references]).score / 100 for n in range(1, 5)}
  rouge = rouge_scorer.RougeScorer(["rougeL"])
  out["rougeL"] = float(np.mean([rouge.score(r, h)["rougeL"].fmeasure
                                 for r, h in zip(references, hypotheses)]))
  out["cider"] = cider(references, hypotheses)
  return out


def cider(references: list[str], hypotheses: list[str]) -> float:
  """Corpus CIDEr-D (pycocoevalcap) of hypotheses against one reference each."""
  _check(references, hypotheses)
  tokens = Tokenizer13a()
  words = lambda text: tokens(text.lower())
  score, _ = Cider().compute_score({i: [words(r)] for i, r in enumerate(references)},
                                   {i: [words(h)] for i, h in enumerate(hypotheses)})
  return float(score)


def observations(texts: list[str], lexicon_dir: str | None = None) -> np.ndarray:
  """[n, len(CHEXPERT)] 0/1: the observations stated present in each text."""
  index = [contract.ENTITIES.index(name) for name in contract.CHEXPERT]
  found = [entities.extract(t, lexicon_dir)[index] == contract.PRESENT for t in texts]
  return np.array(found, np.int8).reshape(len(texts), len(index))


def clinical_efficacy(references: list[str], hypotheses: list[str],
                      lexicon_dir: str | None = None) -> dict:
  """Micro precision / recall / F1 of the observations present in the hypotheses against those
  in the references, and per observation (with `support`: references stating it)."""
  _check(references, hypotheses)
  truth, found = observations(references, lexicon_dir), observations(hypotheses, lexicon_dir)
  p, r, f, _ = precision_recall_fscore_support(truth, found, average="micro", zero_division=0)
  out = dict(precision=float(p), recall=float(r), f1=float(f), per_observation={})
  for name, *row in zip(contract.CHEXPERT, *precision_recall_fscore_support(
      truth, found, average=None, zero_division=0)):
    out["per_observation"][name] = dict(precision=float(row[0]), recall=float(row[1]),
                                        f1=float(row[2]), support=int(row[3]))
  return out
