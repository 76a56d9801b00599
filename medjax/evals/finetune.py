"""Few-label fine-tuning: diagnosis or prognosis from the X-ray alone, with 1%, 10% or 100% of
the labels, as Med-MLLM is evaluated (design section 6).

For each label fraction and seed, the training set is a stratified sample of the train split's
patients with all their images: per class, round(fraction x its patients), at least one, drawn
afresh for each seed. The score is AUROC on the validation split, whose patients are never
trained on (medjax/evals/external.py scores another dataset instead). Three modes:
- "zero_shot": no label at all, the image against text prompts per class (zero_shot.py);
- "linear": the image tower frozen, a logistic regression on its pooled features, standardised
  by the features of every train-split image (unlabelled ones too: a 1% sample of 3-5 X-rays
  cannot estimate a scale per dimension);
- "full": the image tower and a linear head trained together (AdamW; the eval preprocessing,
  no augmentation), from the given run's params.
Without a pretraining run the tower is a random init of the config (its `seed`): the
from-scratch baseline to compare with. Reported per fraction: the mean and spread over seeds
and the mean's 95% patient-bootstrap interval over the validation patients; zero-shot reports
one "fraction" 0.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.metrics import roc_auc_score

from medjax.configs import resolve
from medjax.evals import linear_probe, zero_shot
from medjax.evals.labelled import Labelled, embed, labelled_images, logistic_probe, map_batches
from medjax.train import weights

MODES = ("zero_shot", "linear", "full")


def sample_patients(patients: np.ndarray, labels: np.ndarray | None, fraction: float,
                    seed: int) -> np.ndarray:
  """Row mask of a stratified patient sample: per class (a patient's class is its highest image
  label), round(fraction x its patients), at least one; `labels` None: one class, all rows.
  Seeded, so a fraction and seed always give the same patients."""
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"label fraction {fraction} is not in (0, 1]")
  rng = np.random.default_rng(seed)
  names, index = np.unique(patients, return_inverse=True)
  patient_label = np.zeros(len(names), int)
  if labels is not None:
    np.maximum.at(patient_label, index, labels)
  chosen = []
  for c in (0, 1) if labels is not None else (0,):
    pool = names[patient_label == c]
    if len(pool) == 0:
      raise ValueError(f"no training patient of class {c}: cannot sample both classes")
    chosen.extend(rng.choice(pool, max(1, round(fraction * len(pool))), replace=False))
  return np.isin(patients, chosen)


def _logits(graphdef, trainable, images):
  tower = nnx.merge(graphdef, trainable["tower"])
  return tower(images)[1] @ trainable["head"]["w"] + trainable["head"]["b"]


# Module-level and keyed on the tower's graph and the learning rate, so every seed and fraction
# reuses one compile per batch shape.
@functools.partial(jax.jit, static_argnames=("graphdef", "lr"))
def _step(graphdef, lr, trainable, opt_state, images, labels):
  loss, grads = jax.value_and_grad(lambda t: optax.sigmoid_binary_cross_entropy(
      _logits(graphdef, t, images), labels).mean())(trainable)
  updates, opt_state = optax.adamw(lr).update(grads, opt_state, trainable)
  return optax.apply_updates(trainable, updates), opt_state, loss


_score = jax.jit(_logits, static_argnames="graphdef")


def train_full(tower: nnx.Module, images, labels, *, steps: int, lr: float, batch_size: int,
               seed: int):
  """Trains the image tower (a copy) and a zero-initialised linear head on (images, labels)
  with a sigmoid cross-entropy. -> (score_fn(images) -> logits [n], the loss of each step)."""
  graphdef, state = nnx.split(tower)
  width = tower(images[:1])[1].shape[1]
  trainable = dict(tower=nnx.to_pure_dict(state), head=dict(w=jnp.zeros(width), b=jnp.zeros(())))
  rng = np.random.default_rng(seed)
  opt_state, losses = optax.adamw(lr).init(trainable), []
  batch = min(batch_size, len(images))  # a 1% sample can be smaller than one batch
  for _ in range(steps):
    rows = rng.choice(len(images), batch, replace=False)
    trainable, opt_state, loss = _step(graphdef, lr, trainable, opt_state, images[rows],
                                       labels[rows].astype(np.float32))
    losses.append(float(loss))
  return (lambda x: map_batches(lambda c: _score(graphdef, trainable, c), (x,))), losses


def trials(config, graphdef, params, tokenizer, mode: str, task: str, fit: Labelled | None,
           images: np.ndarray, fractions, seeds: int, *, steps: int, lr: float,
           batch_size: int):
  """Yields (fraction, seed, rows of `fit` trained on, scores [m] of `images`) for each trial
  of `mode`: zero_shot one trial (fraction 0, no rows, `fit` unused), else one per fraction and
  seed, trained on `sample_patients` of `fit`'s patients."""
  if mode not in MODES:
    raise ValueError(f"unknown mode {mode!r}; known: {MODES}")
  if mode == "zero_shot":
    yield 0.0, 0, np.zeros(0, int), zero_shot.task_scores(config, graphdef, params, tokenizer,
                                                           task, images)
    return
  if mode == "linear":
    fit_features, features = embed(graphdef, params, fit.images), embed(graphdef, params, images)
  else:
    tower = nnx.merge(graphdef, params).image  # every seed trains its own copy of it
  for fraction in fractions:
    for seed in range(seeds):
      picked = np.flatnonzero(sample_patients(fit.patients, fit.labels, fraction, seed))
      if mode == "linear":
        # Scaled by every training image's features: the labels are few, the images are not.
        probe = logistic_probe(scale_on=fit_features).fit(fit_features[picked],
                                                          fit.labels[picked])
        yield fraction, seed, picked, probe.predict_proba(features)[:, 1]
      else:
        score_fn, _ = train_full(tower, fit.images[picked], fit.labels[picked], steps=steps,
                                 lr=lr, batch_size=batch_size, seed=seed)
        yield fraction, seed, picked, score_fn(images)


def run(config, workdir: str | None, task: str = "diagnosis", fractions=(0.01, 0.1, 1.0),
        seeds: int = 5, mode: str = "linear", dataset: str = "covid_cxr", steps: int = 100,
        lr: float = 1e-4, batch_size: int = 32) -> dict:
  """AUROC on the validation split after training on each label fraction, for `seeds` seeds."""
  config = resolve.resolved(config)
  data = labelled_images(config, dataset, task)
  train, val = ~data.unseen, data.unseen
  fit = data.select(train)
  labels, patients = data.labels, data.patients
  if len(set(labels[val])) < 2:
    raise ValueError(f"{dataset} validation split: {task!r} has one class only; no AUROC")
  ts, params = weights.load_model(config, workdir)
  tokenizer = weights.load_tokenizer(config, workdir or "") if mode == "zero_shot" else None
  out = dict(task=task, mode=mode, dataset=dataset,
             tower=workdir or f"random init (seed {config.seed})",
             train=dict(images=int(train.sum()), patients=len(set(patients[train]))),
             validation=dict(images=int(val.sum()), patients=len(set(patients[val])),
                             positives=int(labels[val].sum())),
             fractions={})
  scored = {}
  for fraction, _, picked, scores in trials(
      config, ts.graphdef, params, tokenizer, mode, task, fit, data.images[val], fractions,
      seeds, steps=steps, lr=lr, batch_size=batch_size):
    rows = out["fractions"].setdefault(str(fraction), dict(
        auroc_mean=None, auroc_std=None, ci95=None, per_seed=[], train_patients=[],
        train_images=[]))
    rows["per_seed"].append(float(roc_auc_score(labels[val], scores)))
    rows["train_patients"].append(len(set(fit.patients[picked])))
    rows["train_images"].append(len(picked))
    scored.setdefault(str(fraction), []).append(scores)
  for fraction, rows in out["fractions"].items():
    # The validation patients are few: the mean's patient-bootstrap interval says how few.
    rows.update(auroc_mean=float(np.mean(rows["per_seed"])),
                auroc_std=float(np.std(rows["per_seed"])),
                ci95=linear_probe.bootstrap_auroc(scored[fraction], labels[val],
                                                  patients[val])["ci95"])
  return out
