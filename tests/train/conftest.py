"""One uninterrupted reference run of the trainer CLI that the preemption, kill and fault tests
compare with (tests/trainer_runs.py)."""
import pytest

from trainer_runs import cli, run


@pytest.fixture(scope="session")
def straight(covid_data_dir, tmp_path_factory):
  """The uninterrupted CLI run of STEPS steps (how often it saves does not change its params)."""
  workdir = tmp_path_factory.mktemp("straight")
  run(cli(workdir, covid_data_dir))
  return workdir
