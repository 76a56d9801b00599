"""The labelled X-rays the evaluations read, the model they load and its image-tower features.

A dataset is a TFDS name under `config.data.dir` (e.g. "covid_cxr") or a path: a TFDS version
directory (`<data_dir>/<name>/<version>`, holding dataset_info.json) or a dataset directory
(`<data_dir>/<name>`: its newest version), so an external dataset converted elsewhere is
scored where it lies.

A task turns one record into a binary label, or None when the record does not take part:
- "diagnosis": covid19 (1) vs other_pneumonia (0); records with neither or both are left out;
- each outcome of `contract.OUTCOMES` (prognosis): Y = 1, N = 0; blank is left out;
- each CheXpert observation of `contract.CHEXPERT` (mimic_cxr, chexpert_cxr, iu_xray labels):
  1 vs 0; uncertain (-1) and not stated (-2) are left out.
Only pixels are read: the clinical notes, which often name the diagnosis, are not. The X-rays
are frontal: a record whose every view is a lateral is left out, counted and logged. Any network
tells a lateral from a frontal view, and on covid-chestxray laterals lean `other_pneumonia` (on
its validation split that flag alone scores AUROC 0.59): a view shortcut, not a diagnosis.
"""
import dataclasses
import functools
import logging

import jax
import numpy as np
import tensorflow_datasets as tfds
from flax import nnx
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from medjax import contract, paths
from medjax.configs import resolve
from medjax.data import pipeline
from medjax.data.transforms import Example

log = logging.getLogger(__name__)

POSITIVE, NEGATIVE = "covid19", "other_pneumonia"
TASKS = contract.TASKS
ALL_SPLITS = "all"  # a split argument meaning every split the dataset has


def label_of(record, task: str) -> int | None:
  if task == "diagnosis":
    lab = np.asarray(record["labels"])
    pos, neg = (lab[contract.LABELS.index(name)] == 1 for name in (POSITIVE, NEGATIVE))
    return None if pos == neg else int(pos)
  if task in contract.OUTCOMES:
    code = int(record[task])
    return code if code in (0, 1) else None
  if task in contract.CHEXPERT:
    code = int(np.asarray(record["labels"])[contract.LABELS.index(task)])
    return code if code in (0, 1) else None
  raise ValueError(f"unknown task {task!r}; known: {TASKS}")


def dataset_builder(config, dataset: str) -> tfds.core.DatasetBuilder:
  """The read-only TFDS builder of `dataset`: a name under config.data.dir, or a path (see the
  module docstring). Raises naming the directory when it holds no converted dataset."""
  looks_like_path = "/" in dataset or paths.is_url(dataset) or dataset.startswith(("~", "."))
  where = paths.path(dataset if looks_like_path else paths.path(config.data.dir) / dataset)
  if not (where / "dataset_info.json").exists():
    versions = sorted((d for d in where.iterdir() if (d / "dataset_info.json").exists()),
                      key=lambda d: tfds.core.Version(d.name)) if where.is_dir() else []
    if not versions:
      raise FileNotFoundError(f"dataset {dataset!r}: {where} is no TFDS dataset (no "
                              "dataset_info.json in it or in a version dir below it); convert "
                              "one with medjax-prepare")
    where = versions[-1]
  return tfds.builder_from_directory(str(where))


def split_names(builder, split: str) -> list[str]:
  """'train', 'train+validation' or ALL_SPLITS -> the split names, each checked."""
  known = list(builder.info.splits)
  names = known if split == ALL_SPLITS else split.split("+")
  unknown = [s for s in names if s not in known]
  if unknown or not names:
    raise ValueError(f"{builder.data_dir}: no split {unknown or split!r}; it has {known} "
                     f"(or {ALL_SPLITS!r}, or a '+' of them)")
  return names


def image_records(config, dataset: str, split: str = "train+validation",
                  keep=lambda record: True):
  """(split, record, row) for each record of the split(s) with an image that `keep` accepts; the
  row holds every batch key of the eval pipeline (`row["image"]` preprocessed, `text_ids` ...).
  What every evaluation reads. An image that cannot be decoded is skipped, counted and logged
  (never fed as zeros)."""
  data_cfg = resolve.resolved(config).data
  example = Example(data_cfg, pipeline.load_tokenizer(data_cfg), train=False)
  rng = np.random.default_rng(0)  # only feeds text masking, which no evaluation reads
  builder = dataset_builder(config, dataset)
  for name in split_names(builder, split):
    for record in builder.as_data_source(split=name):
      if len(record["images"]) and keep(record):
        row = example.row((builder.name, record), rng)
        if row["has_image"]:
          yield name, record, row
  if example.undecodable:
    log.warning("%s/%s: %d records skipped, their image cannot be decoded", builder.data_dir,
                split, example.undecodable)


@dataclasses.dataclass
class Labelled:
  """The images of a task with their labels, one row per record: images [n, S, S, C] (eval
  preprocessing), labels [n] 0/1, and per row its patient id, source, study id and split."""
  images: np.ndarray
  labels: np.ndarray
  patients: np.ndarray
  sources: np.ndarray
  studies: np.ndarray
  splits: np.ndarray

  @property
  def unseen(self) -> np.ndarray:
    """[n] True for the validation split, which pretraining never reads."""
    return self.splits == "validation"

  def select(self, rows) -> "Labelled":
    """The rows `rows` (a mask or indices) only."""
    return Labelled(**{f.name: getattr(self, f.name)[rows] for f in dataclasses.fields(self)})

  def patient_keys(self) -> np.ndarray:
    """[n] 'source/patient' of every row: patients of different datasets never collide."""
    return np.array([f"{s}/{p}" for s, p in zip(self.sources, self.patients)])


def lateral_only(record) -> bool:
  """True when every view of the record is a lateral; an unknown view ("") may be frontal."""
  views = [v.decode() if isinstance(v, bytes) else str(v) for v in record["views"]]
  return bool(views) and all(v.upper() == "LATERAL" for v in views)


def labelled_images(config, dataset: str, task: str = "diagnosis",
                    split: str = "train+validation") -> Labelled:
  """The records of the split(s) with a frontal (or unknown-view) image and a `task` label."""
  if task not in TASKS:
    raise ValueError(f"unknown task {task!r}; known: {TASKS}")
  columns = {f.name: [] for f in dataclasses.fields(Labelled)}
  laterals = 0

  def keep(record):
    nonlocal laterals
    if label_of(record, task) is None:
      return False
    laterals += lateral_only(record)
    return not lateral_only(record)

  for name, record, row in image_records(config, dataset, split, keep=keep):
    for field, value in (("images", row["image"]), ("labels", label_of(record, task)),
                         ("patients", contract.text_of(record, "patient_id")),
                         ("sources", contract.text_of(record, "source")),
                         ("studies", contract.text_of(record, "study_id")), ("splits", name)):
      columns[field].append(value)
  if laterals:
    log.info("%s (%s, %s): %d labelled records left out, lateral views only", dataset, split,
             task, laterals)
  if not columns["images"]:
    raise ValueError(f"{dataset} ({split}) under {config.data.dir}: no frontal image has a "
                     f"{task!r} label ({laterals} lateral-only records left out)")
  return Labelled(**{k: np.stack(v) if k == "images" else np.array(v)
                     for k, v in columns.items()})


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """`x` [m, ...] with zero rows appended up to `rows` rows."""
  return np.concatenate([x, np.zeros((rows - len(x), *x.shape[1:]), x.dtype)]) if len(x) < rows \
      else x


def map_batches(fn, arrays: tuple, batch: int = 32) -> np.ndarray:
  """fn(*chunks) over `arrays` (each [n, ...]) in chunks of exactly `batch` rows, the last one
  padded with zero rows whose outputs are dropped: one compile per batch size, whatever n.
  -> fn's per-row outputs [n, ...]."""
  n, out = len(arrays[0]), []
  for i in range(0, n, batch):
    real = min(batch, n - i)
    out.append(np.asarray(fn(*(pad_rows(a[i:i + batch], batch) for a in arrays)))[:real])
  return np.concatenate(out)


# Module-level and keyed on the model's graph: every tower of one config reuses one compile.
@functools.partial(jax.jit, static_argnames="graphdef")
def _pooled(graphdef, params, images):
  return nnx.merge(graphdef, params).encode_image(images)[1]


def embed(graphdef, params, images: np.ndarray, batch: int = 32) -> np.ndarray:
  """[n, width]: the image tower's pooled features, in batches."""
  return map_batches(lambda x: _pooled(graphdef, params, x), (images,), batch)


def logistic_probe(scale_on: np.ndarray | None = None):
  """The linear classifier every evaluation fits on frozen features: standardised, then an
  L2-regularised logistic regression (C = 0.1: a few hundred images for hundreds of dims).
  Standardised by the features it is fitted on, or by `scale_on`'s (fitted once, here) when
  given: a few-label sample (3-5 X-rays at 1%) cannot estimate each dimension's scale, the
  unlabelled training images it was drawn from can, and need no label for it."""
  scaler = StandardScaler()
  if scale_on is not None:
    scaler = FunctionTransformer(StandardScaler().fit(scale_on).transform)
  return make_pipeline(scaler, LogisticRegression(C=0.1, max_iter=5000))
