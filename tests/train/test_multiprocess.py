"""Several processes train as one (medjax/train/processes.py, loop.py, feed.py): 2 processes on
127.0.0.1 with 2 fake CPU devices each form a small pod (a data=2 x fsdp=2 mesh over 4 devices),
with real cross-process collectives (gloo).

They train the tiny config exactly like 1 process with 4 devices, read disjoint rows, stop
together when one of them gets SIGTERM, resume on another process count with the batches of an
uninterrupted run, and end within a bounded time when a peer is killed."""
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from medjax.configs import medmllm_tiny
from medjax.train import processes, weights

from trainer_runs import cpu_env

STEPS = 10
MESH = ("--config.mesh.data=2", "--config.mesh.fsdp=2")


def _port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  env = cpu_env(devices)
  env.pop("JAX_PLATFORMS", None)
  return env


def _cmd(workdir, data_dir, *extra):
  return [sys.executable, "-m", "medjax.cli.train", "--config=medmllm_tiny",
          f"--workdir={workdir}", f"--config.data.dir={data_dir}", "--config.log_every=1",
          f"--config.total_steps={STEPS}", "--config.checkpoint_every=4",
          "--config.record_batch_digests=True", "--config.optim.warmup_steps=2", *extra]


def _launch(workdir, data_dir, *extra, processes_=2, devices=2, mesh=MESH):
  """Starts the run as `processes_` processes (one CPU device group each); returns them."""
  port, procs = _port(), []
  for i in range(processes_):
    multi = (f"--coordinator=127.0.0.1:{port}", f"--num_processes={processes_}",
             f"--process_id={i}") if processes_ > 1 else ()
    log = open(Path(workdir).parent / f"{Path(workdir).name}.p{i}.log", "a")
    procs.append(subprocess.Popen(_cmd(workdir, data_dir, *mesh, *multi, *extra),
                                  env=_env(devices), stdout=log, stderr=subprocess.STDOUT))
  return procs


def _finish(procs, timeout=600):
  codes = [p.wait(timeout=timeout) for p in procs]
  return codes


def _log(workdir, i=0) -> str:
  return (Path(workdir).parent / f"{Path(workdir).name}.p{i}.log").read_text()


def _losses(workdir) -> dict:
  rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows}


def _digests(workdir) -> dict:
  lines = (Path(workdir) / "batch_digests.jsonl").read_text().splitlines()
  return {r["step"]: r["sha256"] for r in map(json.loads, lines)}


def _rows(workdir, process) -> dict:
  lines = (Path(workdir) / f"batch_rows.p{process}.jsonl").read_text().splitlines()
  return {r["step"]: r["rows"] for r in map(json.loads, lines)}


def _params(workdir):
  """(newest step, its params as numpy) of a checkpoint saved by any number of processes, read
  here on one device as medjax's evaluations read a run: onto a target built for this process's
  devices (without one, Orbax rebuilds the saving processes' shardings, which do not exist here:
  "Topology mismatch")."""
  with ocp.CheckpointManager(Path(workdir) / "checkpoints", item_names=("state", "meta")) as mgr:
    step = mgr.latest_step()
  _, params = weights.load_model(medmllm_tiny.get_config(), workdir)  # the model _cmd trains
  return step, jax.tree.map(np.asarray, params)


def _wait_for(path_fn, proc, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if path_fn():
      return
    assert proc.poll() is None, "the run ended early"
    time.sleep(0.05)
  raise TimeoutError("condition not reached")


def _logged_step(workdir) -> int:
  path = Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return 0
  lines = path.read_text().splitlines()
  return json.loads(lines[-1])["step"] if lines else 0


@pytest.fixture(scope="module")
def two(covid_data_dir, tmp_path_factory):
  """An uninterrupted 2-process run of STEPS steps."""
  workdir = tmp_path_factory.mktemp("mp") / "two"
  assert _finish(_launch(workdir, covid_data_dir)) == [0, 0], _log(workdir)
  return workdir


def test_two_processes_train_like_one_and_read_disjoint_rows(two, covid_data_dir, tmp_path):
  one = tmp_path / "one"
  assert _finish(_launch(one, covid_data_dir, processes_=1, devices=4)) == [0], _log(one)
  want, got = _losses(one), _losses(two)
  assert sorted(got) == list(range(1, STEPS + 1)) and want.keys() == got.keys()
  np.testing.assert_allclose([got[s] for s in got], [want[s] for s in got], atol=1e-4)
  assert abs(want[STEPS] - want[1]) > 1e-3  # the loss moved: equality shows something
  assert _digests(two) == _digests(one)  # the same global batches, row for row
  p0, p1, whole = _rows(two, 0), _rows(two, 1), _rows(one, 0)
  for step in range(1, STEPS + 1):
    assert not set(p0[step]) & set(p1[step])  # each process read only its own share
    assert p0[step] + p1[step] == whole[step]
  assert "[p1/2]" in _log(two, 1)  # log lines name the process


def test_sigterm_to_one_process_stops_both_at_one_step_and_resume_is_exact(
    two, covid_data_dir, tmp_path):
  # These launches share JAX's compilation cache directory with `two`'s (tests/conftest.py), as
  # a relaunch in production shares its run's: with the cache on, process 0 ran `two`'s cached
  # step beside process 1's fresh compile, and the run hung in its first step.
  workdir = tmp_path / "stopped"
  procs = _launch(workdir, covid_data_dir)
  _wait_for(lambda: _logged_step(workdir) >= 3, procs[0])
  procs[1].send_signal(signal.SIGTERM)  # process 1 alone gets the preemption notice
  assert _finish(procs) == [0, 0], _log(workdir)
  stopped, _ = _params(workdir)
  assert 3 <= stopped < STEPS
  assert _finish(_launch(workdir, covid_data_dir)) == [0, 0], _log(workdir)
  (step, params), (_, want) = _params(workdir), _params(two)
  assert step == STEPS
  jax.tree.map(np.testing.assert_array_equal, params, want)  # bit for bit


def test_a_two_process_checkpoint_resumes_as_one_process(two, covid_data_dir, tmp_path):
  # The uninterrupted run's own step-4 checkpoint: a run launched with total_steps=4 would not
  # do, its learning rate decays to the end over 4 steps (optimizer.schedule), not over STEPS.
  # One device: the trainer re-lays every array out onto a mesh the run never had.
  workdir = tmp_path / "single"
  shutil.copytree(two / "checkpoints" / "4", workdir / "checkpoints" / "4")
  procs = _launch(workdir, covid_data_dir, processes_=1, devices=1, mesh=("--config.mesh.data=1",))
  assert _finish(procs) == [0], _log(workdir)
  assert "Resumed from step 4" in _log(workdir)
  want, got = _losses(two), _losses(workdir)
  assert sorted(got) == list(range(5, STEPS + 1))
  np.testing.assert_allclose([got[s] for s in got], [want[s] for s in got], atol=1e-4)
  digests, whole = _digests(workdir), _digests(two)
  assert [digests[s] for s in range(5, STEPS + 1)] == [whole[s] for s in range(5, STEPS + 1)]


def test_a_killed_process_ends_the_other_within_the_timeout(covid_data_dir, tmp_path):
  # Process 0's next collective fails at once (gloo: "Connection reset by peer"); its watchdog
  # goes on watching, names the silent peer and exits 75, long before JAX's own heartbeat
  # timeout (lost + 30 s) would abort it. A lost process 0 is another case: it hosts JAX's
  # coordination service, and JAX aborts the others at once (medjax/train/processes.py).
  workdir, lost = tmp_path / "killed", 10
  procs = _launch(workdir, covid_data_dir, f"--config.timeouts.lost_process_seconds={lost}",
                  "--config.total_steps=200")
  _wait_for(lambda: (Path(workdir) / "checkpoints" / "4").is_dir(), procs[0])
  procs[1].kill()
  t0 = time.time()
  code = procs[0].wait(timeout=120)
  elapsed = time.time() - t0
  assert code == processes.LOST_PEER_EXIT, _log(workdir)[-3000:]
  assert elapsed < 2 * lost  # `lost` s of silence, a heartbeat interval (lost / 6) or two
  assert "Lost a process: process 1 sent no heartbeat" in _log(workdir)
  # Watched from before the init compile: a peer that is merely slower to reach the first step
  # is not called lost (under load one can be 10 s behind).
  log = _log(workdir)
  assert -1 < log.find("Watching 1 other process(es)") < log.find("Model: ")
  # What it left is a complete checkpoint of both processes' shards (read here); relaunching
  # from one is test_sigterm_to_one_process_stops_both_at_one_step_and_resume_is_exact's.
  saved, _ = _params(workdir)
  assert saved >= 4
