"""Which X-rays each evaluation task reads, and with which label."""
import csv

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medjax import contract
from medjax.evals import labelled


def test_label_of_each_task():
  record = dict(labels=np.zeros(len(contract.LABELS), np.int8), survival=np.int8(-1),
                went_icu=np.int8(0), intubated=np.int8(1))
  assert labelled.label_of(record, "diagnosis") is None  # neither class
  record["labels"][contract.LABELS.index("covid19")] = 1
  assert labelled.label_of(record, "diagnosis") == 1
  record["labels"][contract.LABELS.index("other_pneumonia")] = 1
  assert labelled.label_of(record, "diagnosis") is None  # both: ambiguous, left out
  assert [labelled.label_of(record, t) for t in ("survival", "went_icu", "intubated")] == [
      None, 0, 1]
  with pytest.raises(ValueError, match="unknown task 'mortality'"):
    labelled.label_of(record, "mortality")


def test_lateral_only_records_are_those_without_a_possibly_frontal_view():
  def record(*views):
    return dict(views=np.array([v.encode() for v in views], object))
  assert labelled.lateral_only(record("LATERAL"))
  assert labelled.lateral_only(record("LATERAL", "LATERAL"))
  assert not labelled.lateral_only(record("LATERAL", "PA"))  # the study has a frontal view
  assert not labelled.lateral_only(record(""))  # unknown: kept
  assert not labelled.lateral_only(record())  # no image: image_records never offers it


def test_diagnosis_reads_the_frontal_x_rays_and_counts_the_laterals(tiny_config, shared_data,
                                                                     caplog):
  rows = list(csv.DictReader(open(shared_data / "covid-chestxray" / "metadata.csv")))
  wanted = [r for r in rows if r["label"] in (labelled.POSITIVE, labelled.NEGATIVE)]
  laterals = sum(r["view"] == "L" for r in wanted)  # the sample's code for a lateral
  assert laterals > 0  # the sample has some, so the rule is exercised
  with caplog.at_level("INFO", logger="medjax.evals.labelled"):
    data = labelled.labelled_images(tiny_config, "covid_cxr")
  assert len(data.labels) == len(wanted) - laterals
  assert data.labels.sum() == sum(r["label"] == labelled.POSITIVE and r["view"] != "L"
                                  for r in wanted)
  assert f"{laterals} labelled records left out, lateral views only" in caplog.text


def test_outcome_task_reads_every_stated_outcome(tiny_config, shared_data):
  config = tiny_config
  data = labelled.labelled_images(config, "covid_cxr", "survival")
  images, labels, patients, unseen = data.images, data.labels, data.patients, data.unseen
  rows = list(csv.DictReader(open(shared_data / "covid-chestxray" / "metadata.csv")))
  stated = [r for r in rows if r["survival"] in ("Y", "N") and r["view"] != "L"]  # frontal
  assert len(labels) == len(images) == len(stated) and 0 < unseen.sum() < len(labels)
  assert labels.sum() == sum(r["survival"] == "Y" for r in stated)
  assert set(patients) == {r["patient_group"] for r in stated}
  # The eval preprocessing: per-image normalisation, so each image has mean 0 and std 1.
  np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), 0, atol=1e-4)


def test_logistic_probe_scaled_by_a_pool_keeps_the_pools_scale():
  rng = np.random.default_rng(0)
  pool = rng.normal(size=(300, 8)) * np.arange(1, 9)  # dimension d has scale d + 1
  pooled = labelled.logistic_probe(scale_on=pool).fit(pool[:4], np.array([0, 1, 0, 1]))
  # Fitting on four rows leaves the scale the pool gave: mean 0, std 1 over the pool.
  np.testing.assert_allclose(pooled[0].transform(pool), (pool - pool.mean(0)) / pool.std(0),
                             atol=1e-12)
  own = labelled.logistic_probe().fit(pool[:4], np.array([0, 1, 0, 1]))
  np.testing.assert_allclose(own[0].transform(pool[:4]).std(0), 1.0, atol=1e-12)


def test_a_pool_scale_keeps_a_few_label_fit_from_blowing_up_a_quiet_dimension():
  # Dimension 0 holds the class; dimension 1 is noise of the same scale, which the four
  # labelled rows happen to share almost exactly. Scaled by those rows alone, dimension 1 is
  # stretched ~1000x and drowns dimension 0 on new images; scaled by the pool, it is not.
  rng = np.random.default_rng(0)
  y = np.tile([0, 1], 200)
  pool = np.stack([2.0 * y + rng.normal(size=y.size), rng.normal(size=y.size)], 1)
  x, fit_y = pool[:4].copy(), y[:4]
  x[:, 1] = [0.3001, 0.3, 0.2999, 0.3002]
  new, new_y = pool[4:], y[4:]
  auroc = lambda probe: roc_auc_score(new_y, probe.fit(x, fit_y).predict_proba(new)[:, 1])
  assert auroc(labelled.logistic_probe(scale_on=pool)) > 0.85
  assert auroc(labelled.logistic_probe()) < 0.7
