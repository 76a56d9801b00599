"""Linear probe on frozen image embeddings: did pretraining learn something about diagnosis?

Embeds every X-ray of the dev data (train + validation splits) labelled covid19 or
other_pneumonia with the image tower (pooled ViT features, preprocessing of the eval pipeline),
once with the params of each given pretraining run's newest checkpoint (or of a step directory),
once with each of several random inits of the same config. Two floors need no network: the
pixels mean-pooled to 16 x 16, and each image's brightness and contrast (its pixel mean and std).
Each feature set is scored by a logistic regression's AUROC under patient-grouped, stratified
5-fold cross-validation (no patient on both sides), repeated over 5 shuffles.

Both sides are means over seeds: one tower's AUROC depends on its seed by several points, for a
random init and for a pretraining run alike, so a gain of one run over one init can be luck.
The gain of the pretrained mean over the random mean is compared fold by fold; on the
out-of-fold predictions with a patient bootstrap interval (the data's noise, towers fixed); and
with runs as the unit by an exact permutation test (the seeds' noise). The latter two again on
the validation split's images alone, which pretraining never saw. Only pixels are used: the
clinical notes, which often name the diagnosis, are not.

The brightness/contrast floor is the shortcut to watch: on the covid-chestxray dev data those
two numbers alone reach AUROC 0.65 (they track the source that published the image), and a random
tower fed `data.normalize="dataset"` inputs reads them too. With "per_image" (the default) no
tower can see them.
"""
import itertools

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from medjax.configs import resolve
from medjax.evals.labelled import NEGATIVE, POSITIVE, embed, labelled_images, logistic_probe
from medjax.train import weights

FLOORS = ("pixels_16x16", "brightness_contrast")


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
  images = labelled_images(fixed, dataset).images
  return np.stack([images.mean(axis=(1, 2, 3)), images.std(axis=(1, 2, 3))], axis=1)


def cv_auroc(features, labels, groups, repeats: int = 5) -> tuple[list[float], np.ndarray]:
  """(AUROC of each of the 5 x `repeats` test folds, each image's out-of-fold probability
  averaged over the repeats)."""
  scores, oof = [], np.zeros(len(labels))
  for seed in range(repeats):
    folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    for train, test in folds.split(features, labels, groups):
      probe = logistic_probe()
      probe.fit(features[train], labels[train])
      p = probe.predict_proba(features[test])[:, 1]
      scores.append(roc_auc_score(labels[test], p))
      oof[test] += p / repeats
  return scores, oof


def weighted_aurocs(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """AUROC of `scores` under each row of `weights` [r, n] (how often each image is drawn): the
  weighted share of (positive, negative) pairs ordered right, ties counting half. Equal to
  sklearn's roc_auc_score(labels, scores, sample_weight=row) for every row, but all rows in one
  matrix product: thousands of bootstrap resamples cost one call, not thousands."""
  pos, neg = scores[labels == 1], scores[labels == 0]
  right = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
  w_pos, w_neg = weights[:, labels == 1], weights[:, labels == 0]
  return ((w_pos @ right) * w_neg).sum(axis=1) / (w_pos.sum(axis=1) * w_neg.sum(axis=1))


def patient_draws(labels: np.ndarray, groups: np.ndarray, samples: int = 2000,
                  seed: int = 0) -> np.ndarray:
  """[samples, n]: how often each image is drawn when the patients are resampled with
  replacement (all images of a drawn patient go in together); draws with one class only (no
  AUROC) are redrawn. The weights `weighted_aurocs` takes."""
  rng = np.random.default_rng(seed)
  patients, index = np.unique(groups, return_inverse=True)
  draws = []
  while len(draws) < samples:
    counts = np.bincount(rng.integers(len(patients), size=len(patients)),
                         minlength=len(patients))[index]  # times each image is drawn
    drawn = labels[counts > 0]
    if drawn.min() == drawn.max():
      continue
    draws.append(counts)
  return np.array(draws, float)


def bootstrap_auroc(score_sets: list, labels, groups, samples: int = 2000, seed: int = 0) -> dict:
  """Mean AUROC of the score vectors `score_sets` (one per seed, all of the same images) with a
  95% patient-bootstrap interval of that mean: the data's noise, the fitted models fixed."""
  mean = lambda weights: np.mean([weighted_aurocs(s, labels, weights) for s in score_sets], 0)
  low, high = np.percentile(mean(patient_draws(labels, groups, samples, seed)), [2.5, 97.5])
  return dict(auroc=float(mean(np.ones((1, len(labels))))[0]), ci95=[float(low), float(high)])


def paired_bootstrap(oofs_a: list, oofs_b: list, labels, groups, samples: int = 2000,
                     seed: int = 0) -> dict:
  """Mean AUROC of the towers `oofs_a` minus that of `oofs_b`, on out-of-fold predictions, with a
  95% interval from resampling patients (`patient_draws`) and the share of resamples where a is
  not better: how sure "a beats b" is, given the few patients."""
  def gain(weights):
    return (np.mean([weighted_aurocs(a, labels, weights) for a in oofs_a], axis=0) -
            np.mean([weighted_aurocs(b, labels, weights) for b in oofs_b], axis=0))

  diffs = gain(patient_draws(labels, groups, samples, seed))
  low, high = np.percentile(diffs, [2.5, 97.5])
  return dict(oof_gain=float(gain(np.ones((1, len(labels))))[0]), ci95=[float(low), float(high)],
              share_not_better=float(np.mean(diffs <= 0)))


def permutation_test(a: list[float], b: list[float]) -> dict:
  """Runs as the unit: is a pretraining run (AUROCs `a`, one per seed) better than a random init
  (`b`)? The patient bootstrap holds the towers fixed; this counts their seed-to-seed spread.
  -> mean(a) - mean(b), the share of (a, b) pairs where a is higher, and the exact one-sided
  p-value: the share of all ways to split the pooled AUROCs into len(a) and len(b) whose mean
  difference is at least the observed one (one run against 8 inits can reach 1/9 at best)."""
  pooled, k = np.array(list(a) + list(b)), len(a)
  total = pooled.sum()
  observed = np.mean(a) - np.mean(b)
  splits = np.array([pooled[list(c)].sum() for c in itertools.combinations(range(len(pooled)), k)])
  diffs = splits / k - (total - splits) / (len(pooled) - k)
  return dict(mean_gain=float(observed),
              pairs_better=float(np.mean([x > y for x in a for y in b])),
              p_value=float(np.mean(diffs >= observed - 1e-12)), runs=k, inits=len(b))


def seeded(config, seed: int):
  """A copy of `config` at `seed`: random tower k of a baseline is the config at seed k."""
  out = config.copy_and_resolve_references()
  out.seed = seed
  return out


def run(config, workdirs: list[str], dataset: str = "covid_cxr", random_inits: int = 8) -> dict:
  """The pretraining runs `workdirs` (one recipe at one or several seeds) vs `random_inits`
  random towers (seeds 0, 1, ...) of the same config; each side scores the mean of its towers."""
  config = resolve.resolved(config)
  data = labelled_images(config, dataset)
  images, labels, patients, unseen = data.images, data.labels, data.patients, data.unseen
  ts, _ = weights.load_model(config)
  runs = [f"pretrained_{i}" for i in range(len(workdirs))]
  randoms = [f"random_init_{seed}" for seed in range(random_inits)]
  inits = {name: weights.load_model(config, workdir, ts)[1]
           for name, workdir in zip(runs, workdirs)}
  for seed, name in enumerate(randoms):
    inits[name] = weights.load_model(seeded(config, seed), "", ts)[1]
  out = dict(images=len(labels), patients=len(set(patients)), positives=int(labels.sum()),
             task=f"{POSITIVE} vs {NEGATIVE}", workdirs=list(workdirs))
  features = {name: embed(ts.graphdef, params, images) for name, params in inits.items()}
  features["pixels_16x16"] = pooled_pixels(images, 16)  # floors: no network at all
  features["brightness_contrast"] = brightness_contrast(config, dataset)
  scores, oof = {}, {}
  for name, feats in features.items():
    folds, oof[name] = cv_auroc(feats, labels, patients)
    scores[name] = np.array(folds)
  scores["pretrained"] = np.mean([scores[r] for r in runs], axis=0)
  scores["random_init"] = np.mean([scores[r] for r in randoms], axis=0)
  for name in ("pretrained", "random_init") + FLOORS:
    out[name] = dict(auroc_mean=float(scores[name].mean()), auroc_std=float(scores[name].std()),
                     folds=len(scores[name]))
  run_means = [float(scores[r].mean()) for r in runs]
  seed_means = [float(scores[r].mean()) for r in randoms]
  out["pretrained"].update(per_run=run_means, run_std=float(np.std(run_means)))
  out["random_init"].update(per_seed=seed_means, seed_std=float(np.std(seed_means)))
  # All towers meet the same folds: the per-fold difference is the sharper comparison (the
  # spread across folds is mostly which patients land in the small test fold).
  gain = scores["pretrained"] - scores["random_init"]
  out["gain"] = dict(mean=float(gain.mean()), std=float(gain.std()),
                     folds_better=int((gain > 0).sum()),
                     **paired_bootstrap([oof[r] for r in runs], [oof[r] for r in randoms],
                                        labels, patients),
                     runs_vs_inits=permutation_test(run_means, seed_means))
  # Pretraining read the train split's images with their notes, which often name the
  # diagnosis; the validation split's images it never saw. Their out-of-fold predictions say
  # whether a gain carries over to new images (few patients: a wide interval).
  new_labels = labels[unseen]
  new = {name: roc_auc_score(new_labels, oof[name][unseen]) for name in runs + randoms}
  out["unseen"] = dict(
      images=int(unseen.sum()), patients=len(set(patients[unseen])),
      pretrained_auroc=float(np.mean([new[r] for r in runs])),
      random_init_auroc=float(np.mean([new[r] for r in randoms])),
      **paired_bootstrap([oof[r][unseen] for r in runs], [oof[r][unseen] for r in randoms],
                         new_labels, patients[unseen]),
      runs_vs_inits=permutation_test([new[r] for r in runs], [new[r] for r in randoms]))
  return out
