"""The linear probe that compares pretrained and random image embeddings."""
import csv

import jax
import numpy as np
import tensorflow_datasets as tfds

from configs import medmllm_tiny
from launch import train as trainer
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
  sure = probe.paired_bootstrap(signal_oof, [noise_oof], labels, groups, samples=300)
  assert sure["ci95"][0] > 0.2 and sure["share_not_better"] == 0.0
  wash = probe.paired_bootstrap(noise_oof, [noise_oof], labels, groups, samples=300)
  assert wash["oof_gain"] == 0.0 and wash["ci95"] == [0.0, 0.0] and wash["share_not_better"] == 1.0
  # Against several baselines the gain is over their mean: signal vs (signal, noise) is half of
  # signal vs noise.
  half = probe.paired_bootstrap(signal_oof, [signal_oof, noise_oof], labels, groups, samples=300)
  assert np.isclose(half["oof_gain"], sure["oof_gain"] / 2)


def test_pooled_pixels_averages_blocks():
  images = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4, 1)
  pooled = probe.pooled_pixels(images, 2)
  assert pooled.shape == (2, 4)
  np.testing.assert_allclose(pooled[0], [images[0, :2, :2].mean(), images[0, :2, 2:].mean(),
                                         images[0, 2:, :2].mean(), images[0, 2:, 2:].mean()])


def test_probe_runs_on_the_real_dev_data(covid_data_dir, shared_data, tmp_path):
  config = medmllm_tiny.get_config()
  config.data.dir = str(covid_data_dir)
  config.update(dict(total_steps=2, log_every=2, mesh=dict(data=1, fsdp=1, tensor=1)))
  trainer.train(config, str(tmp_path), devices=jax.devices()[:1])
  result = probe.run(config, str(tmp_path), random_inits=3)
  rows = list(csv.DictReader(open(shared_data / "covid-chestxray" / "metadata.csv")))
  wanted = [r for r in rows if r["label"] in (probe.POSITIVE, probe.NEGATIVE)]
  assert result["images"] == len(wanted)
  assert result["positives"] == sum(r["label"] == probe.POSITIVE for r in wanted)
  assert result["patients"] == len({r["patient_group"] for r in wanted})
  for init in ("pretrained", "random_init") + probe.FLOORS:
    assert 0.0 <= result[init]["auroc_mean"] <= 1.0 and result[init]["folds"] == 25
  # The baseline is the mean of the random inits, which differ from each other.
  seeds = result["random_init"]["per_seed"]
  assert len(seeds) == 3 and len(set(seeds)) == 3
  assert np.isclose(result["random_init"]["auroc_mean"], np.mean(seeds))
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
