import jax
import pytest

from medjax.configs import medmllm_tiny
from medjax.train import loop as trainer

# Every evaluation test compiles small graphs whose results do not depend on XLA's
# optimisation passes (both sides of each comparison are compiled alike): skip them.
from tests.models.conftest import _quick_compiles  # noqa: F401


@pytest.fixture(scope="session")
def tiny_config(covid_data_dir):
  """The tiny config reading the real sample: what the evaluation tests embed and train."""
  config = medmllm_tiny.get_config()
  config.data.dir = str(covid_data_dir)
  config.update(dict(total_steps=2, log_every=2, checkpoint_every=1,
                     mesh=dict(data=1, fsdp=1, tensor=1)))
  return config


@pytest.fixture(scope="session")
def tiny_run(tiny_config, tmp_path_factory):
  """The workdir of a 2-step tiny pretraining run on the real sample, a checkpoint at each step:
  what the evaluations load (trained once for all evaluation tests)."""
  workdir = tmp_path_factory.mktemp("tiny_run")
  trainer.train(tiny_config, str(workdir), devices=jax.devices()[:1])
  return workdir


@pytest.fixture(scope="session")
def external_dataset(covid_data_dir, shared_data, tmp_path_factory):
  """A second conversion, standing in for another site's data: the X-rays of about half of
  covid_cxr's validation patients (none of its train patients), converted on their own with
  another split seed into another data dir. -> the TFDS version dir (what a user passes)."""
  import csv
  import shutil

  import tensorflow_datasets as tfds

  from medjax.data_prep import covid_cxr
  validation = tfds.data_source("covid_cxr", split="validation", data_dir=str(covid_data_dir),
                                download=False)
  patients = sorted({r["patient_id"].decode() for r in validation})
  keep = set(patients[::2])
  src = tmp_path_factory.mktemp("site_b_source")
  with open(shared_data / "covid-chestxray" / "metadata.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  with open(src / "metadata.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(r for r in rows if r["patient_group"] in keep)
  # Copies, not a symlink: a converter reads only files that resolve inside its --src.
  (src / "images").mkdir()
  for r in rows:
    if r["patient_group"] in keep:
      shutil.copy(shared_data / "covid-chestxray" / "images" / r["file"], src / "images")
  out = tmp_path_factory.mktemp("site_b")
  covid_cxr.prepare(src, out, seed=1)
  return out / "covid_cxr" / "2.0.0"
