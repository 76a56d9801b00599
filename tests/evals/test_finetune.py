"""Few-label fine-tuning: the patient samples, both modes, on the real dev data."""
import jax
import numpy as np
import pytest
from flax import nnx
from sklearn.metrics import roc_auc_score

from medjax.evals import finetune, labelled
from medjax.models.medmllm import MedMLLM


def test_sample_patients_is_stratified_by_patient_and_seeded():
  # 100 class-0 patients with 2 images each, 30 class-1 patients with 1 image each.
  patients = np.array([f"n{i}" for i in range(100) for _ in range(2)] +
                      [f"p{i}" for i in range(30)])
  labels = np.array([0] * 200 + [1] * 30)
  tenth = finetune.sample_patients(patients, labels, 0.1, seed=0)
  picked = set(patients[tenth])
  assert sum(p[0] == "n" for p in picked) == 10 and sum(p[0] == "p" for p in picked) == 3
  assert tenth.sum() == 10 * 2 + 3  # every image of a picked patient, none of the others
  # 1% of 30 patients rounds to 0: each class still gets one patient.
  assert len(set(patients[finetune.sample_patients(patients, labels, 0.01, seed=0)])) == 2
  assert finetune.sample_patients(patients, labels, 1.0, seed=3).all()
  again = finetune.sample_patients(patients, labels, 0.1, seed=0)
  other = finetune.sample_patients(patients, labels, 0.1, seed=1)
  assert (again == tenth).all() and (other != tenth).any()
  with pytest.raises(ValueError, match="not in"):
    finetune.sample_patients(patients, labels, 0.0, seed=0)
  with pytest.raises(ValueError, match="class 1"):
    finetune.sample_patients(patients[:200], labels[:200], 0.5, seed=0)


def test_linear_mode_on_the_real_dev_data(tiny_config, tiny_run):
  config, workdir = tiny_config, tiny_run
  result = finetune.run(config, str(workdir), "diagnosis", fractions=(0.01, 1.0), seeds=3)
  data = labelled.labelled_images(config, "covid_cxr")
  labels, patients, unseen = data.labels, data.patients, data.unseen
  assert result["tower"] == str(workdir)
  assert result["train"] == dict(images=int((~unseen).sum()),
                                 patients=len(set(patients[~unseen])))
  assert result["validation"]["positives"] == labels[unseen].sum()
  few, every = result["fractions"]["0.01"], result["fractions"]["1.0"]
  assert all(0.0 <= a <= 1.0 for a in few["per_seed"] + every["per_seed"])
  # 1%: one patient or two per class, a different sample per seed.
  assert all(2 <= n <= 4 for n in few["train_patients"]) and len(set(few["per_seed"])) > 1
  # 100%: every seed trains on all train images; the fit is deterministic, so one AUROC.
  assert every["train_images"] == [result["train"]["images"]] * 3 and every["auroc_std"] == 0.0
  # The interval is the validation patients' noise around the mean: wide with ~33 of them.
  for rows in (few, every):
    low, high = rows["ci95"]
    assert low < rows["auroc_mean"] < high and high - low > 0.05


def test_full_mode_fits_its_training_images_and_leaves_the_tower(tiny_config):
  config = tiny_config
  data = labelled.labelled_images(config, "covid_cxr")
  images, labels = data.images, data.labels
  rows = np.concatenate([np.flatnonzero(labels == 1)[:6], np.flatnonzero(labels == 0)[:6]])
  tower = MedMLLM(config.model, rngs=nnx.Rngs(0)).image
  before = jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(tower)))
  score, losses = finetune.train_full(tower, images[rows], labels[rows], steps=40, lr=1e-3,
                                      batch_size=12, seed=0)
  assert len(losses) == 40 and losses[-1] < 0.3 * losses[0]
  assert roc_auc_score(labels[rows], score(images[rows])) == 1.0  # memorised
  after = nnx.to_pure_dict(nnx.state(tower))
  jax.tree.map(np.testing.assert_array_equal, before, after)  # trained a copy


def test_full_mode_from_random_init_for_an_outcome(tiny_config):
  config = tiny_config
  # The batch and learning rate of the test above: its compiled step is reused.
  result = finetune.run(config, None, "went_icu", fractions=(1.0,), seeds=1, mode="full",
                        steps=2, lr=1e-3, batch_size=12)
  assert result["tower"] == "random init (seed 0)" and result["mode"] == "full"
  assert 0.0 <= result["fractions"]["1.0"]["per_seed"][0] <= 1.0
