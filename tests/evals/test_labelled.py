"""Which X-rays each evaluation task reads, and with which label."""
import csv

import numpy as np
import pytest

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


def test_outcome_task_reads_every_stated_outcome(tiny_config, shared_data):
  config = tiny_config
  data = labelled.labelled_images(config, "covid_cxr", "survival")
  images, labels, patients, unseen = data.images, data.labels, data.patients, data.unseen
  rows = list(csv.DictReader(open(shared_data / "covid-chestxray" / "metadata.csv")))
  stated = [r for r in rows if r["survival"] in ("Y", "N")]
  assert len(labels) == len(images) == len(stated) and 0 < unseen.sum() < len(labels)
  assert labels.sum() == sum(r["survival"] == "Y" for r in stated)
  assert set(patients) == {r["patient_group"] for r in stated}
  # The eval preprocessing: per-image normalisation, so each image has mean 0 and std 1.
  np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), 0, atol=1e-4)
