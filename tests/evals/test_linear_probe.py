"""The linear probe that compares pretrained and random image embeddings."""
import csv

import numpy as np
import tensorflow_datasets as tfds
from sklearn.metrics import roc_auc_score

from medjax.evals import linear_probe as probe


def test_cv_auroc_separates_signal_from_noise():
  rng = np.random.default_rng(0)
  labels = np.tile([0, 1, 1, 1], 30)
  groups = np.repeat(np.arange(60), 2)  # two images per patient, kept on one side
  signal = rng.normal(size=(120, 8)) + labels[:, None]
  noise = rng.normal(size=(120, 8))
  (signal_folds, signal_oof), (noise_folds, noise_oof) = (probe.cv_auroc(x, labels, groups)
                                                          for x in (signal, noise))
  assert np.mean(signal_folds) > 0.9 and abs(np.mean(noise_folds) - 0.5) < 0.1
  # Signal beats noise with an interval far from 0; noise against itself is a wash.
  sure = probe.paired_bootstrap([signal_oof], [noise_oof], labels, groups, samples=300)
  assert sure["ci95"][0] > 0.2 and sure["share_not_better"] == 0.0
  wash = probe.paired_bootstrap([noise_oof], [noise_oof], labels, groups, samples=300)
  assert wash["oof_gain"] == 0.0 and wash["ci95"] == [0.0, 0.0] and wash["share_not_better"] == 1.0
  # Against several baselines the gain is over their mean: signal vs (signal, noise) is half of
  # signal vs noise.
  half = probe.paired_bootstrap([signal_oof], [signal_oof, noise_oof], labels, groups, samples=300)
  assert np.isclose(half["oof_gain"], sure["oof_gain"] / 2)
  # Several towers on the a side too: (signal, noise) vs noise is again half.
  both = probe.paired_bootstrap([signal_oof, noise_oof], [noise_oof], labels, groups, samples=300)
  assert np.isclose(both["oof_gain"], sure["oof_gain"] / 2)


def test_weighted_aurocs_match_sklearn_with_sample_weights():
  rng = np.random.default_rng(0)
  labels = (rng.random(60) < 0.7).astype(int)
  scores = np.round(rng.random(60), 1)  # many ties, which count half
  weights = rng.integers(0, 3, size=(5, 60)).astype(float)  # a bootstrap's draw counts
  want = [roc_auc_score(labels, scores, sample_weight=w) for w in weights]
  np.testing.assert_allclose(probe.weighted_aurocs(scores, labels, weights), want, atol=1e-12)


def test_permutation_test_counts_every_split_of_the_seeds():
  # 3 against (1, 2): of the 3 ways to pick one value, only picking 3 gains >= 1.5.
  one = probe.permutation_test([3.0], [1.0, 2.0])
  assert one == dict(mean_gain=1.5, pairs_better=1.0, p_value=1 / 3, runs=1, inits=2)
  # Two runs above all three inits: the best of C(5, 2) = 10 splits.
  above = probe.permutation_test([0.70, 0.80], [0.50, 0.60, 0.65])
  assert np.isclose(above["p_value"], 0.1) and above["pairs_better"] == 1.0
  # Interleaved: 0.6 loses to 0.65 and 0.7; 3 of 10 splits gain as much as (0.6, 0.8) does.
  mixed = probe.permutation_test([0.60, 0.80], [0.50, 0.65, 0.70])
  assert np.isclose(mixed["mean_gain"], 0.7 - 0.6166666) and mixed["pairs_better"] == 4 / 6
  assert np.isclose(mixed["p_value"], 0.3)


def test_pooled_pixels_averages_blocks():
  images = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4, 1)
  pooled = probe.pooled_pixels(images, 2)
  assert pooled.shape == (2, 4)
  np.testing.assert_allclose(pooled[0], [images[0, :2, :2].mean(), images[0, :2, 2:].mean(),
                                         images[0, 2:, :2].mean(), images[0, 2:, 2:].mean()])


def test_probe_runs_on_the_real_dev_data(tiny_config, tiny_run, covid_data_dir, shared_data):
  config, workdir = tiny_config, tiny_run
  # Two "runs": the workdir (its newest step, 2) and the step-1 directory.
  result = probe.run(config, [str(workdir), str(workdir / "checkpoints" / "1")],
                     random_inits=3)
  rows = list(csv.DictReader(open(shared_data / "covid-chestxray" / "metadata.csv")))
  wanted = [r for r in rows if r["label"] in (probe.POSITIVE, probe.NEGATIVE)
            and r["view"] != "L"]  # laterals are left out (labelled.lateral_only)
  assert result["images"] == len(wanted)
  assert result["positives"] == sum(r["label"] == probe.POSITIVE for r in wanted)
  assert result["patients"] == len({r["patient_group"] for r in wanted})
  for init in ("pretrained", "random_init") + probe.FLOORS:
    assert 0.0 <= result[init]["auroc_mean"] <= 1.0 and result[init]["folds"] == 25
  # The baseline is the mean of the random inits, which differ from each other.
  seeds = result["random_init"]["per_seed"]
  assert len(seeds) == 3 and len(set(seeds)) == 3
  assert np.isclose(result["random_init"]["auroc_mean"], np.mean(seeds))
  runs = result["pretrained"]["per_run"]
  assert len(runs) == 2 and runs[0] != runs[1]
  assert np.isclose(result["pretrained"]["auroc_mean"], np.mean(runs))
  # Runs as units: 2 runs against 3 inits, so the p-value is at least 1 / C(5, 2).
  by_seed = result["gain"]["runs_vs_inits"]
  assert (by_seed["runs"], by_seed["inits"]) == (2, 3) and 0.1 <= by_seed["p_value"] <= 1.0
  assert np.isclose(by_seed["mean_gain"], np.mean(runs) - np.mean(seeds))
  gain = result["pretrained"]["auroc_mean"] - result["random_init"]["auroc_mean"]
  assert np.isclose(result["gain"]["mean"], gain) and 0 <= result["gain"]["folds_better"] <= 25
  low, high = result["gain"]["ci95"]
  assert low <= result["gain"]["oof_gain"] <= high
  # The unseen part is the validation split: its images and patients, and its own comparison.
  unseen = result["unseen"]
  validation = tfds.data_source("covid_cxr", split="validation", data_dir=str(covid_data_dir),
                                download=False)
  ids = {r["study_id"].decode() for r in validation}
  assert unseen["images"] == sum(r["file"] in ids for r in wanted) > 0
  assert np.isclose(unseen["oof_gain"], unseen["pretrained_auroc"] - unseen["random_init_auroc"])
