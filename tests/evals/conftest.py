import jax
import pytest

from configs import medmllm_tiny
from launch import train as trainer


@pytest.fixture(scope="module")
def tiny_run(covid_data_dir, tmp_path_factory):
  """(config, workdir) of a 2-step tiny pretraining run on the real sample, a checkpoint at each
  step: what the evaluations load."""
  config = medmllm_tiny.get_config()
  config.data.dir = str(covid_data_dir)
  config.update(dict(total_steps=2, log_every=2, checkpoint_every=1,
                     mesh=dict(data=1, fsdp=1, tensor=1)))
  workdir = tmp_path_factory.mktemp("tiny_run")
  trainer.train(config, str(workdir), devices=jax.devices()[:1])
  return config, workdir
