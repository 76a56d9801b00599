"""Report generation: the decoder writes a study's text from its X-ray, scored against the text
the study came with (design section 6: Med-MLLM's third downstream task).

The references are what the captioning objective trains on (`study_text`: findings +
impression, else the clinical notes) for the records of one split with an image and a text.
Decoding is greedy and recomputes the prefix at each step (no key/value cache: short texts,
small decoders). Scores, from libraries rather than our own n-gram code: corpus BLEU-1..4
(sacrebleu: lower-cased, its standard 13a tokens, no smoothing, as Papineni et al. count) and
mean ROUGE-L F1 (rouge-score). Beside the model, a retrieval baseline any generator should
beat: each image gets the text of the train record whose pooled image feature is nearest
(cosine), from the same tower.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from medjax.configs import resolve
from medjax.data import pipeline
from medjax.data.transforms import study_text
from medjax.evals.labelled import embed, image_records
from medjax.train import weights


# Module-level and keyed on the model's graph and token ids: one compile per config and batch.
@functools.partial(jax.jit, static_argnames=("graphdef", "length", "vocab", "bos", "eos", "pad"))
def _greedy(graphdef, params, images, length, vocab, bos, eos, pad):
  tokens = nnx.merge(graphdef, params).encode_image(images)[0]
  ids = jnp.full((images.shape[0], length), pad, jnp.int32).at[:, 0].set(bos)
  positions = jnp.arange(length)

  def step(t, carry):
    ids, done = carry
    model = nnx.merge(graphdef, params)  # inside the loop body: nnx needs its own trace level
    # The decoder is causal, so position t reads only tokens <= t: the padding after t is inert.
    mask = jnp.broadcast_to(positions <= t, ids.shape)
    # The model's vocabulary may be padded past the tokenizer's: those ids are never chosen.
    logits = model.decode(ids, mask, tokens, at=t)[:, :vocab]
    token = jnp.where(done, pad, jnp.argmax(logits, -1).astype(jnp.int32))
    return ids.at[:, t + 1].set(token), done | (token == eos)

  done = jnp.zeros(images.shape[0], bool)
  return jax.lax.fori_loop(0, length - 1, step, (ids, done))[0]


def generate(graphdef, params, images: np.ndarray, tokenizer, length: int,
             batch: int = 32) -> np.ndarray:
  """Greedy token ids [n, length] (BOS first, padding after EOS) for each image."""
  ids = [np.asarray(_greedy(graphdef, params, images[i:i + batch], length, tokenizer.vocab_size,
                            tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id))
         for i in range(0, len(images), batch)]
  return np.concatenate(ids)


def text_scores(references: list[str], hypotheses: list[str]) -> dict:
  """Corpus BLEU-1..4 and mean ROUGE-L F1 of hypotheses against one reference each."""
  if len(references) != len(hypotheses) or not references:
    raise ValueError(f"{len(references)} references for {len(hypotheses)} hypotheses")
  out = {f"bleu{n}": BLEU(max_ngram_order=n, lowercase=True, smooth_method="none")
         .corpus_score(hypotheses, [references]).score / 100 for n in range(1, 5)}
  rouge = rouge_scorer.RougeScorer(["rougeL"])
  out["rougeL"] = float(np.mean([rouge.score(r, h)["rougeL"].fmeasure
                                 for r, h in zip(references, hypotheses)]))
  return out


def paired_images(config, dataset: str, split: str):
  """(images [n,S,S,C], texts [n]) of the split's records with an image and a study text."""
  rows = list(image_records(config, dataset, (split,), keep=lambda r: bool(study_text(r))))
  if not rows:
    raise ValueError(f"{dataset}/{split} under {config.data.dir}: no record has an image and text")
  return np.stack([image for _, _, image in rows]), [study_text(r) for _, r, _ in rows]


def run(config, workdir: str | None, dataset: str = "covid_cxr", split: str = "validation",
        length: int | None = None) -> tuple[dict, list[str], list[str]]:
  """Scores of the model's reports and of the nearest-train-report baseline on `split`.
  -> (summary, generated texts, reference texts); the texts are for the caller to keep or not."""
  config = resolve.resolved(config)
  if split == "train":
    raise ValueError("split 'train': the baseline retrieves train reports; score another split")
  length = length or config.data.text_len
  if not 2 <= length <= config.model.decoder.max_len:
    raise ValueError(f"report length {length}: the decoder takes 2..{config.model.decoder.max_len}"
                     " tokens (model.decoder.max_len)")
  ts, params = weights.load_model(config, workdir)
  graphdef = ts.graphdef
  tokenizer = pipeline.load_tokenizer(config.data.copy_and_resolve_references())
  images, references = paired_images(config, dataset, split)
  ids = generate(graphdef, params, images, tokenizer, length)
  generated = [tokenizer.decode(row) for row in ids]

  train_images, train_texts = paired_images(config, dataset, "train")
  query, keys = (f / np.linalg.norm(f, axis=1, keepdims=True)
                 for f in (embed(graphdef, params, images),
                           embed(graphdef, params, train_images)))
  nearest = [train_texts[i] for i in np.argmax(query @ keys.T, axis=1)]
  words = lambda texts: float(np.mean([len(t.split()) for t in texts]))
  summary = dict(dataset=dataset, split=split, images=len(images),
                 tower=workdir or f"random init (seed {config.seed})",
                 mean_words=dict(generated=words(generated), reference=words(references)),
                 generated=text_scores(references, generated),
                 nearest_train_report=text_scores(references, nearest))
  return summary, generated, references
