import jax
import pytest

from medjax.configs import medmllm_tiny
from medjax.train import loop as trainer


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
