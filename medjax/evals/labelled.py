"""The labelled X-rays the evaluations read, the model they load and its image-tower features.

A task turns one record into a binary label, or None when the record does not take part:
- "diagnosis": covid19 (1) vs other_pneumonia (0); records with neither or both are left out;
- each outcome of `contract.OUTCOMES` (prognosis): Y = 1, N = 0; blank is left out.
Only pixels are read: the clinical notes, which often name the diagnosis, are not.
"""
import functools

import jax
import numpy as np
import tensorflow_datasets as tfds
from flax import nnx
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medjax import contract
from medjax.configs import resolve
from medjax.data import pipeline
from medjax.data.transforms import Example

POSITIVE, NEGATIVE = "covid19", "other_pneumonia"
TASKS = ("diagnosis",) + contract.OUTCOMES


def label_of(record, task: str) -> int | None:
  if task == "diagnosis":
    lab = np.asarray(record["labels"])
    pos, neg = (lab[contract.LABELS.index(name)] == 1 for name in (POSITIVE, NEGATIVE))
    return None if pos == neg else int(pos)
  if task in contract.OUTCOMES:
    code = int(record[task])
    return code if code in (0, 1) else None
  raise ValueError(f"unknown task {task!r}; known: {TASKS}")


def image_records(config, dataset: str, splits=("train", "validation"),
                  keep=lambda record: True):
  """(split, record, image) for each record of the splits with an image that `keep` accepts;
  the image is preprocessed as the eval pipeline does. What every evaluation reads."""
  data_cfg = resolve.resolved(config).data
  example = Example(data_cfg, pipeline.load_tokenizer(data_cfg), train=False)
  rng = np.random.default_rng(0)  # only feeds text masking, which no evaluation reads
  for split in splits:
    for record in tfds.data_source(dataset, split=split, data_dir=data_cfg.dir, download=False):
      if len(record["images"]) and keep(record):
        yield split, record, example.row((dataset, record), rng)["image"]


def labelled_images(config, dataset: str, task: str = "diagnosis"):
  """(images [n,S,S,C], labels [n], patient ids [n], unseen [n] True for the validation split,
  which pretraining never reads) of the dev splits' records with an image and a `task` label;
  images are preprocessed as the eval pipeline does."""
  if task not in TASKS:
    raise ValueError(f"unknown task {task!r}; known: {TASKS}")
  images, labels, patients, unseen = [], [], [], []
  keep = lambda record: label_of(record, task) is not None
  for split, record, image in image_records(config, dataset, keep=keep):
    images.append(image)
    labels.append(label_of(record, task))
    patients.append(record["patient_id"].decode())
    unseen.append(split == "validation")
  if not images:
    raise ValueError(f"{dataset} under {config.data.dir}: no image has a {task!r} label")
  return np.stack(images), np.array(labels), np.array(patients), np.array(unseen)


# Module-level and keyed on the model's graph: every tower of one config reuses one compile.
@functools.partial(jax.jit, static_argnames="graphdef")
def _pooled(graphdef, params, images):
  return nnx.merge(graphdef, params).encode_image(images)[1]


def embed(graphdef, params, images: np.ndarray, batch: int = 32) -> np.ndarray:
  """[n, width]: the image tower's pooled features, in batches."""
  return np.concatenate([np.asarray(_pooled(graphdef, params, images[i:i + batch]))
                         for i in range(0, len(images), batch)])


def logistic_probe():
  """The linear classifier every evaluation fits on frozen features: standardised, then an
  L2-regularised logistic regression (C = 0.1: a few hundred images for hundreds of dims)."""
  return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
