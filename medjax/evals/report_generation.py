"""Report generation as Med-MLLM evaluates it (design section 6, its third downstream task): the
decoder is fine-tuned on 1% / 10% / 100% of the train split's image-report pairs, then writes
each X-ray's text of the scored split, greedily and by beam search (medjax/models/decoding.py).

The references are what the captioning objective trains on (`study_text`: findings +
impression, else the clinical notes) for the records of one split with an image and a text.
Fine-tuning samples patients as finetune.py does (round(fraction x patients), at least one),
with all their pairs, and trains the decoder and its image projection (`train_tower`: the image
tower too) with the captioning loss (teacher-forced cross-entropy; AdamW, no augmentation);
fraction 0 scores the model as given. Scores (report_metrics.py): BLEU-1..4, ROUGE-L, CIDEr and
the clinical efficacy of the CheXpert observations. Beside the model, a retrieval baseline any
generator should beat: each image gets the text of the train record whose pooled image feature
is nearest (cosine), from the given tower.
"""
import dataclasses
import functools

import jax
import numpy as np
import optax
from flax import nnx

from medjax.configs import resolve
from medjax.contract import study_text, text_of
from medjax.evals import report_metrics
from medjax.evals.finetune import sample_patients
from medjax.evals.labelled import embed, image_records, map_batches, pad_rows
from medjax.models import decoding
from medjax.objectives import captioning
from medjax.train import weights

DECODER = ("decoder", "image_to_decoder")  # params fine-tuning trains; `train_tower` adds "image"


@dataclasses.dataclass
class Pairs:
  """A split's X-rays with a text: images [n, S, S, C], their tokenized texts (ids [n, T] int32,
  mask [n, T] bool, what captioning trains on), the texts [n] and patient ids [n]."""
  images: np.ndarray
  ids: np.ndarray
  mask: np.ndarray
  texts: list
  patients: np.ndarray

  def select(self, rows: np.ndarray) -> "Pairs":
    """The pairs at indices `rows` only."""
    return Pairs(self.images[rows], self.ids[rows], self.mask[rows],
                 [self.texts[i] for i in rows], self.patients[rows])


def paired_rows(config, dataset: str, split: str) -> Pairs:
  """The records of `split` with an image and a study text."""
  columns = dict(images=[], ids=[], mask=[], texts=[], patients=[])
  for _, record, row in image_records(config, dataset, split, keep=lambda r: bool(study_text(r))):
    for key, value in (("images", row["image"]), ("ids", row["text_ids"]),
                       ("mask", row["text_mask"]), ("texts", study_text(record)),
                       ("patients", text_of(record, "patient_id"))):
      columns[key].append(value)
  if not columns["texts"]:
    raise ValueError(f"{dataset}/{split} under {config.data.dir}: no record has an image and text")
  return Pairs(np.stack(columns["images"]), np.stack(columns["ids"]), np.stack(columns["mask"]),
               columns["texts"], np.array(columns["patients"]))


# Module-level and keyed on the model's graph and token ids: one compile per config and batch.
_greedy = jax.jit(decoding.greedy_reports,
                  static_argnames=("graphdef", "length", "vocab", "bos", "eos", "pad"))
_beam = jax.jit(decoding.beam_reports,
                static_argnames=("graphdef", "length", "beam", "vocab", "bos", "eos", "pad"))


def generate(graphdef, params, images: np.ndarray, tokenizer, length: int,
             beam: int | None = None, batch: int = 32) -> np.ndarray:
  """Token ids [n, length] (BOS first, padding after EOS) for each image: greedy when `beam` is
  None, else the best of a beam search of that width."""
  ids = tokenizer.vocab_size, tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id
  decode = ((lambda x: _greedy(graphdef, params, x, length, *ids)) if beam is None else
            (lambda x: _beam(graphdef, params, x, length, beam, *ids)[0]))
  return map_batches(decode, (images,), batch)


def _caption_loss(graphdef, params, images, ids, mask, rows):
  """Teacher-forced captioning loss of the pairs with `rows` [n] True and their number of target
  tokens."""
  batch = dict(image=images, text_ids=ids, text_mask=mask, has_image=rows, has_text=rows)
  outputs = nnx.merge(graphdef, params)(batch, frozenset(captioning.NEEDS))
  loss, metrics = captioning.loss(outputs, batch, None)
  return loss, metrics["tokens"]


_loss = jax.jit(_caption_loss, static_argnames="graphdef")


@functools.partial(jax.jit, static_argnames=("graphdef", "lr"))
def _step(graphdef, lr, trainable, frozen, opt_state, images, ids, mask):
  loss, grads = jax.value_and_grad(lambda t: _caption_loss(
      graphdef, {**frozen, **t}, images, ids, mask, np.ones(len(ids), bool))[0])(trainable)
  updates, opt_state = optax.adamw(lr).update(grads, opt_state, trainable)
  return optax.apply_updates(trainable, updates), opt_state, loss


def caption_loss(graphdef, params, pairs: Pairs, batch: int = 32) -> float:
  """The captioning loss over all pairs (each target token weighs the same)."""
  total = tokens = 0.0
  rows = np.ones(len(pairs.texts), bool)
  for i in range(0, len(rows), batch):  # the last chunk padded with rows that do not count
    chunk = (pad_rows(a[i:i + batch], batch) for a in (pairs.images, pairs.ids, pairs.mask, rows))
    loss, n = _loss(graphdef, params, *chunk)
    total, tokens = total + float(loss) * float(n), tokens + float(n)
  return total / tokens


def finetune_captioner(graphdef, params, pairs: Pairs, *, steps: int, lr: float, batch_size: int,
                       seed: int, train_tower: bool = False) -> tuple[dict, list[float]]:
  """(params with the decoder, its image projection and with `train_tower` the image tower
  trained on `pairs`; the loss of each step). `params` is not changed."""
  names = DECODER + (("image",) if train_tower else ())
  trainable = {k: v for k, v in params.items() if k in names}
  frozen = {k: v for k, v in params.items() if k not in names}
  opt_state, losses = optax.adamw(lr).init(trainable), []
  rng = np.random.default_rng(seed)
  batch = min(batch_size, len(pairs.texts))  # a 1% sample can be smaller than one batch
  for _ in range(steps):
    rows = rng.choice(len(pairs.texts), batch, replace=False)
    trainable, opt_state, loss = _step(graphdef, lr, trainable, frozen, opt_state,
                                       pairs.images[rows], pairs.ids[rows], pairs.mask[rows])
    losses.append(float(loss))
  return {**frozen, **trainable}, losses


def _scores(references, texts, lexicon_dir) -> dict:
  return dict(**report_metrics.text_scores(references, texts),
              clinical=report_metrics.clinical_efficacy(references, texts, lexicon_dir),
              mean_words=float(np.mean([len(t.split()) for t in texts])))


def run(config, workdir: str | None, dataset: str = "covid_cxr", split: str = "validation",
        length: int | None = None, fractions=(0.0,), beam: int = 3, steps: int = 200,
        lr: float = 3e-4, batch_size: int = 16, train_tower: bool = False, seed: int = 0,
        lexicon_dir: str | None = None) -> tuple[dict, dict]:
  """Scores of the greedy and beam reports on `split` after fine-tuning on each fraction of
  the train pairs (0: none), and of the nearest-train-report baseline.
  -> (summary, texts {"reference": [...], "<fraction>/<greedy|beam>": [...]}); the texts are for
  the caller to keep or not."""
  config = resolve.resolved(config)
  if split == "train":
    raise ValueError("split 'train': fine-tuning and the baseline read train reports; score "
                     "another split")
  length = length or config.data.text_len
  if not 2 <= length <= config.model.decoder.max_len:
    raise ValueError(f"report length {length}: the decoder takes 2..{config.model.decoder.max_len}"
                     " tokens (model.decoder.max_len)")
  if beam < 1:
    raise ValueError(f"beam {beam}: a beam holds at least one hypothesis")
  ts, params = weights.load_model(config, workdir)
  graphdef = ts.graphdef
  tokenizer = weights.load_tokenizer(config, workdir or "")
  scored, train = paired_rows(config, dataset, split), paired_rows(config, dataset, "train")
  references = scored.texts
  texts = dict(reference=references)
  summary = dict(dataset=dataset, split=split, images=len(references),
                 tower=workdir or f"random init (seed {config.seed})",
                 decoding=dict(length=length, beam=beam),
                 finetune=dict(steps=steps, lr=lr, batch_size=batch_size,
                               train_tower=train_tower, seed=seed),
                 reference_words=float(np.mean([len(t.split()) for t in references])),
                 fractions={})
  for fraction in fractions:
    row, tuned = {}, params
    if fraction:
      picked = np.flatnonzero(sample_patients(train.patients, None, fraction, seed))
      subset = train.select(picked)
      before = caption_loss(graphdef, params, subset)
      tuned, _ = finetune_captioner(graphdef, params, subset, steps=steps, lr=lr,
                                    batch_size=batch_size, seed=seed, train_tower=train_tower)
      row.update(train_pairs=len(picked), train_patients=len(set(subset.patients)),
                 train_caption_loss=dict(before=before,
                                         after=caption_loss(graphdef, tuned, subset)))
    for name, width in (("greedy", None), ("beam", beam)):
      ids = generate(graphdef, tuned, scored.images, tokenizer, length, width)
      texts[f"{fraction}/{name}"] = [tokenizer.decode(r) for r in ids]
      row[name] = _scores(references, texts[f"{fraction}/{name}"], lexicon_dir)
    summary["fractions"][str(fraction)] = row

  query, keys = (f / np.linalg.norm(f, axis=1, keepdims=True)
                 for f in (embed(graphdef, params, scored.images),
                           embed(graphdef, params, train.images)))
  nearest = [train.texts[i] for i in np.argmax(query @ keys.T, axis=1)]
  summary["nearest_train_report"] = _scores(references, nearest, lexicon_dir)
  return summary, texts
