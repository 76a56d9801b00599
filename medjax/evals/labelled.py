"""The labelled X-rays the evaluations read, and their image-tower features.

A task turns one record into a binary label, or None when the record does not take part:
- "diagnosis": covid19 (1) vs other_pneumonia (0); records with neither or both are left out;
- each outcome of `entities.OUTCOMES` (prognosis): Y = 1, N = 0; blank is left out.
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

from medjax.data import entities, pipeline
from medjax.data.transforms import Example

POSITIVE, NEGATIVE = "covid19", "other_pneumonia"
TASKS = ("diagnosis",) + entities.OUTCOMES


def label_of(record, task: str) -> int | None:
  if task == "diagnosis":
    lab = np.asarray(record["labels"])
    pos, neg = (lab[entities.LABELS.index(name)] == 1 for name in (POSITIVE, NEGATIVE))
    return None if pos == neg else int(pos)
  if task in entities.OUTCOMES:
    code = int(record[task])
    return code if code in (0, 1) else None
  raise ValueError(f"unknown task {task!r}; known: {TASKS}")


def labelled_images(config, dataset: str, task: str = "diagnosis"):
  """(images [n,S,S,C], labels [n], patient ids [n], unseen [n] True for the validation split,
  which pretraining never reads) of the dev splits' records with an image and a `task` label;
  images are preprocessed as the eval pipeline does."""
  if task not in TASKS:
    raise ValueError(f"unknown task {task!r}; known: {TASKS}")
  data_cfg = config.data.copy_and_resolve_references()
  data_cfg.patch_size = config.model.image.patch_size
  example = Example(data_cfg, pipeline.load_tokenizer(data_cfg), labels=entities.LABELS,
                    entities=entities.ENTITIES, train=False)
  images, labels, patients, unseen = [], [], [], []
  rng = np.random.default_rng(0)  # only feeds text masking, which no evaluation reads
  for split in ("train", "validation"):
    for record in tfds.data_source(dataset, split=split, data_dir=data_cfg.dir, download=False):
      label = label_of(record, task)
      if len(record["images"]) == 0 or label is None:
        continue
      images.append(example.row((dataset, record), rng)["image"])
      labels.append(label)
      patients.append(record["patient_id"].decode())
      unseen.append(split == "validation")
  if not images:
    raise ValueError(f"{dataset} under {data_cfg.dir}: no image has a {task!r} label")
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
