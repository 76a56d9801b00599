"""Linear probe on frozen image embeddings: did pretraining learn something about diagnosis?

Embeds every X-ray of the dev data (train + validation splits) labelled covid19 or
other_pneumonia with the image tower (pooled ViT features, preprocessing of the eval pipeline),
once with the params of a run's newest checkpoint (or of a given step directory), once with each
of several random inits of the same config. Two floors need no network: the pixels mean-pooled
to 16 x 16, and each image's brightness and contrast (its pixel mean and std). Each feature set
is scored by a logistic regression's AUROC under patient-grouped, stratified 5-fold
cross-validation (no patient on both sides), repeated over 5 shuffles. The baseline is the mean
over the random inits: one random tower's AUROC depends on its seed by several points, so a gain
over a single seed can be that seed's bad luck. The gain of pretrained over that mean is compared
fold by fold and, on the out-of-fold predictions, with a patient bootstrap interval; the
latter again on the validation split's images alone, which pretraining never saw.
Only pixels are used: the clinical notes, which often name the diagnosis, are not.

The brightness/contrast floor is the shortcut to watch: on the covid-chestxray dev data those
two numbers alone reach AUROC 0.65 (they track the source that published the image), and a random
tower fed `data.normalize="dataset"` inputs reads them too. With "per_image" (the default) no
tower can see them.
"""
import jax
import numpy as np
import tensorflow_datasets as tfds
from flax import nnx
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medjax import sharding
from medjax.data import entities, pipeline
from medjax.data.transforms import Example
from medjax.train import checkpoint
from medjax.train import state as state_lib

POSITIVE, NEGATIVE = "covid19", "other_pneumonia"
FLOORS = ("pixels_16x16", "brightness_contrast")


def labelled_images(config, dataset: str):
  """(images [n,S,S,C], labels [n] 1 = POSITIVE, patient ids [n], unseen [n] True for the
  validation split, which pretraining never reads) of the dev splits."""
  data_cfg = config.data.copy_and_resolve_references()
  data_cfg.patch_size = config.model.image.patch_size
  example = Example(data_cfg, pipeline.load_tokenizer(data_cfg), labels=entities.LABELS,
                    entities=entities.ENTITIES, train=False)
  pos, neg = entities.LABELS.index(POSITIVE), entities.LABELS.index(NEGATIVE)
  images, labels, patients, unseen = [], [], [], []
  rng = np.random.default_rng(0)  # only feeds text masking, which the probe does not read
  for split in ("train", "validation"):
    for record in tfds.data_source(dataset, split=split, data_dir=data_cfg.dir, download=False):
      lab = np.asarray(record["labels"])
      if len(record["images"]) == 0 or (lab[pos] == 1) == (lab[neg] == 1):
        continue  # no image, or not exactly one of the two classes
      images.append(example.row((dataset, record), rng)["image"])
      labels.append(int(lab[pos] == 1))
      patients.append(record["patient_id"].decode())
      unseen.append(split == "validation")
  return np.stack(images), np.array(labels), np.array(patients), np.array(unseen)


def embed(graphdef, params, images: np.ndarray, batch: int = 32) -> np.ndarray:
  fn = jax.jit(lambda p, x: nnx.merge(graphdef, p).encode_image(x)[1])
  return np.concatenate([np.asarray(fn(params, images[i:i + batch]))
                         for i in range(0, len(images), batch)])


def pooled_pixels(images: np.ndarray, side: int) -> np.ndarray:
  """[n, S, S, C] -> [n, side*side*C]: each image mean-pooled to side x side."""
  n, size, _, c = images.shape
  k = size // side
  return images.reshape(n, side, k, side, k, c).mean(axis=(2, 4)).reshape(n, -1)


def brightness_contrast(config, dataset: str) -> np.ndarray:
  """[n, 2]: each probe image's pixel mean and std, whatever `data.normalize` the model uses
  (any fixed affine map of them scores the same: the probe standardises its features)."""
  fixed = config.copy_and_resolve_references()
  fixed.data.normalize = "dataset"
  images = labelled_images(fixed, dataset)[0]
  return np.stack([images.mean(axis=(1, 2, 3)), images.std(axis=(1, 2, 3))], axis=1)


def cv_auroc(features, labels, groups, repeats: int = 5) -> tuple[list[float], np.ndarray]:
  """(AUROC of each of the 5 x `repeats` test folds, each image's out-of-fold probability
  averaged over the repeats)."""
  scores, oof = [], np.zeros(len(labels))
  for seed in range(repeats):
    folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    for train, test in folds.split(features, labels, groups):
      probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
      probe.fit(features[train], labels[train])
      p = probe.predict_proba(features[test])[:, 1]
      scores.append(roc_auc_score(labels[test], p))
      oof[test] += p / repeats
  return scores, oof


def paired_bootstrap(oof_a, oofs_b: list, labels, groups, samples: int = 2000,
                     seed: int = 0) -> dict:
  """AUROC(a) minus the mean AUROC of the baselines `oofs_b`, on out-of-fold predictions, with a
  95% interval from resampling patients (all images of a drawn patient go in together) and the
  share of resamples where a is not better: how sure "a beats b" is, given the few patients."""
  rng = np.random.default_rng(seed)
  patients, index = np.unique(groups, return_inverse=True)
  members = [np.flatnonzero(index == i) for i in range(len(patients))]

  def gain(rows):
    return (roc_auc_score(labels[rows], oof_a[rows]) -
            np.mean([roc_auc_score(labels[rows], b[rows]) for b in oofs_b]))

  diffs = []
  while len(diffs) < samples:
    rows = np.concatenate([members[i] for i in rng.integers(len(patients), size=len(patients))])
    if labels[rows].min() == labels[rows].max():
      continue  # one class only: no AUROC
    diffs.append(gain(rows))
  low, high = np.percentile(diffs, [2.5, 97.5])
  return dict(oof_gain=float(gain(np.arange(len(labels)))), ci95=[float(low), float(high)],
              share_not_better=float(np.mean(np.array(diffs) <= 0)))


def run(config, workdir: str, dataset: str = "covid_cxr", random_inits: int = 8) -> dict:
  """Pretrained (`workdir`) vs the mean of `random_inits` random towers (seeds 0, 1, ...)."""
  images, labels, patients, unseen = labelled_images(config, dataset)
  ts = state_lib.setup(config, sharding.make_mesh(dict(data=1), jax.devices()[:1]))
  inits = {"pretrained": checkpoint.load_params(workdir, ts.abstract_state["params"])}
  for seed in range(random_inits):
    seeded = config.copy_and_resolve_references()
    seeded.seed = seed
    inits[f"random_init_{seed}"] = state_lib.init(seeded, ts)["params"]
  out = dict(images=len(labels), patients=len(set(patients)), positives=int(labels.sum()),
             task=f"{POSITIVE} vs {NEGATIVE}", workdir=workdir)
  features = {name: embed(ts.graphdef, params, images) for name, params in inits.items()}
  features["pixels_16x16"] = pooled_pixels(images, 16)  # floors: no network at all
  features["brightness_contrast"] = brightness_contrast(config, dataset)
  scores, oof = {}, {}
  for name, feats in features.items():
    folds, oof[name] = cv_auroc(feats, labels, patients)
    scores[name] = np.array(folds)
  randoms = [f"random_init_{seed}" for seed in range(random_inits)]
  scores["random_init"] = np.mean([scores[r] for r in randoms], axis=0)
  for name in ("pretrained", "random_init") + FLOORS:
    out[name] = dict(auroc_mean=float(scores[name].mean()), auroc_std=float(scores[name].std()),
                     folds=len(scores[name]))
  seed_means = [float(scores[r].mean()) for r in randoms]
  out["random_init"].update(per_seed=seed_means, seed_std=float(np.std(seed_means)))
  # All inits meet the same folds: the per-fold difference is the sharper comparison (the
  # spread across folds is mostly which patients land in the small test fold).
  gain = scores["pretrained"] - scores["random_init"]
  out["gain"] = dict(mean=float(gain.mean()), std=float(gain.std()),
                     folds_better=int((gain > 0).sum()),
                     **paired_bootstrap(oof["pretrained"], [oof[r] for r in randoms], labels,
                                        patients))
  # Pretraining read the train split's images with their notes, which often name the
  # diagnosis; the validation split's images it never saw. Their out-of-fold predictions say
  # whether a gain carries over to new images (few patients: a wide interval).
  new = {name: o[unseen] for name, o in oof.items()}
  out["unseen"] = dict(
      images=int(unseen.sum()), patients=len(set(patients[unseen])),
      pretrained_auroc=float(roc_auc_score(labels[unseen], new["pretrained"])),
      random_init_auroc=float(np.mean([roc_auc_score(labels[unseen], new[r]) for r in randoms])),
      **paired_bootstrap(new["pretrained"], [new[r] for r in randoms], labels[unseen],
                         patients[unseen]))
  return out
