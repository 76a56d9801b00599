"""The pod and cluster launchers (launch/tpu_pod.sh, launch/slurm.sbatch): shellcheck-clean, and
their dry runs print the exact commands of a real launch."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ["launch/demo.sh", "launch/venv.sh", "launch/cpu_env.sh", "launch/tpu_pod.sh",
           "launch/slurm.sbatch", ".ci/run"]


def test_shellcheck_passes():
  shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which(
      "shellcheck")
  if shellcheck is None:
    pytest.skip("shellcheck not installed (pip install -e .[dev])")
  done = subprocess.run([shellcheck, *SCRIPTS], cwd=REPO, capture_output=True, text=True)
  assert done.returncode == 0, done.stdout


def _dry(*args) -> list[str]:
  done = subprocess.run(["bash", *args], cwd=REPO, capture_output=True, text=True, check=True)
  return done.stdout.splitlines()


def test_tpu_pod_dry_run_for_a_v5p_128_slice():
  lines = _dry("launch/tpu_pod.sh", "--dry_run", "--name", "medjax-l", "--zone", "us-east5-a",
               "--type", "v5p-128", "--", "--config", "medmllm_l", "--workdir", "gs://b/run")
  assert lines[0] == ("gcloud compute tpus tpu-vm create medjax-l --zone=us-east5-a "
                      "--accelerator-type=v5p-128 --version=v2-alpha-tpuv5")
  train = [ln for ln in lines if "medjax-train" in ln]
  assert len(train) == 1 and "--worker=all" in train[0]
  assert "medjax-train --multiprocess --config medmllm_l --workdir gs://b/run" in train[0]
  assert lines[-1].startswith("gcloud compute tpus tpu-vm delete medjax-l")
  queued = _dry("launch/tpu_pod.sh", "--dry_run", "--queued", "--name", "q", "--zone", "z",
                "--type", "v5p-128", "--only", "create", "--", "--config", "medmllm_l")
  assert queued[0].startswith("gcloud compute tpus queued-resources create q-qr --node-id=q")


def test_slurm_dry_run_for_4_nodes_of_8_gpus():
  lines = _dry("launch/slurm.sbatch", "--dry_run", "--nodes", "4", "--gpus", "8", "--",
               "--config", "medmllm_l", "--workdir", "/shared/run")
  assert lines[0] == "# 4 nodes x 8 GPUs: 32 processes, 32 devices"
  assert lines[-1].startswith("srun --nodes=4 --ntasks-per-node=8 --kill-on-bad-exit=1 ")
  assert lines[-1].endswith("medjax-train --multiprocess --config medmllm_l --workdir /shared/run")
  per_node = _dry("launch/slurm.sbatch", "--dry_run", "--per_node", "--", "--config", "x")
  assert "--ntasks-per-node=1 --kill-on-bad-exit=1 env JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7 " in (
      per_node[-1])
