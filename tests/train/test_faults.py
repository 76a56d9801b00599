"""The trainer under faults: a full disk, corrupt or incomplete checkpoints, repeated stop
signals, broken init_from weights, random SIGKILLs. Nothing hangs, nothing is lost, every step
is logged once."""
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from medjax import named_params
from medjax.configs import medmllm_tiny, resolve
from medjax.train import loop as trainer, weights

from trainer_runs import STEPS, cli, cpu_env, logged_steps, run, saved

ONE = jax.devices()[:1]


def _tiny(data_dir, **overrides):
  c = medmllm_tiny.get_config()
  c.data.dir = str(data_dir)
  c.mesh = dict(data=1, fsdp=1, tensor=1)
  c.update(dict(log_every=1, checkpoint_every=2, **overrides))
  return c


@pytest.fixture(scope="module")
def six(covid_data_dir, tmp_path_factory):
  """An uninterrupted in-process run of 6 steps, checkpoints at 2, 4, 6."""
  workdir = tmp_path_factory.mktemp("six")
  trainer.train(_tiny(covid_data_dir, total_steps=6), str(workdir), devices=ONE)
  return workdir


def _damage_meta(step_dir: Path):
  (step_dir / "meta" / "metadata").write_text("{not json")


def _empty(step_dir: Path):
  shutil.rmtree(step_dir)
  step_dir.mkdir()


def _drop_arrays(step_dir: Path):
  for path in sorted((step_dir / "state").rglob("*")):
    if path.is_file() and path.name != "_METADATA" and path.stat().st_size > 1000:
      path.unlink()


@pytest.mark.parametrize("damage", [_damage_meta, _empty, _drop_arrays],
                         ids=["unreadable_meta", "empty_step_dir", "missing_arrays"])
def test_resume_falls_back_past_a_broken_newest_step(six, covid_data_dir, tmp_path, damage,
                                                    caplog):
  workdir = tmp_path / "run"
  shutil.copytree(six, workdir)
  damage(workdir / "checkpoints" / "6")
  with caplog.at_level("WARNING"):
    history = trainer.train(_tiny(covid_data_dir, total_steps=6), str(workdir), devices=ONE)
  assert "checkpoints/6 cannot be restored" in caplog.text  # names the step it skipped
  assert [h["step"] for h in history] == [5, 6]  # resumed from step 4
  jax.tree.map(np.testing.assert_array_equal, saved(workdir)[1], saved(six)[1])
  assert logged_steps(workdir) == list(range(1, 7))  # the repeated steps replaced, each once


def test_a_run_of_another_config_is_refused_not_skipped(six, covid_data_dir, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(six, workdir)
  other = _tiny(covid_data_dir, total_steps=6)
  other.data.mlm_rate = 0.3
  with pytest.raises(ValueError, match=r"another config(.|\n)*data\.mlm_rate"):
    trainer.train(other, str(workdir), devices=ONE)


def _small_disk(path: Path, megabytes: int) -> Path:
  path.mkdir(parents=True)
  done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs",
                         str(path)], capture_output=True, text=True)
  if done.returncode:
    pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
  return path


def test_a_full_disk_ends_the_run_with_the_error_and_it_resumes_once_there_is_space(
    straight, covid_data_dir, tmp_path):
  """One checkpoint of the tiny model (params, Adam moments, EMA teacher: ~4.2 MB on disk) fits
  on the 7 MB disk, the second does not: the run must stop, not hang, name the disk error, keep
  the first save."""
  disk = _small_disk(tmp_path / "disk", 7)
  try:
    workdir = disk / "run"
    cmd = cli(workdir, covid_data_dir, "--config.checkpoint_every=2",
              "--config.keep_checkpoints=3", "--config.timeouts.checkpoint_seconds=60")
    env = cpu_env()
    t0 = time.time()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and time.time() - t0 < 300
    assert "[Errno 28]" in done.stderr and "the disk is full" in done.stderr, done.stderr[-2000:]
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [2], steps  # the failed save never became a step
    subprocess.run(["mount", "-o", "remount,size=96m", str(disk)], check=True)  # space is back
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Resumed from step 2" in done.stderr
    jax.tree.map(np.testing.assert_array_equal, saved(workdir)[1], saved(straight)[1])
    assert logged_steps(workdir) == list(range(1, STEPS + 1))
  finally:
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_second_stop_signal_exits_at_once_with_a_clear_message(covid_data_dir, tmp_path):
  cmd = [sys.executable, "-m", "medjax.cli.train", "--config=medmllm_tiny",
         f"--workdir={tmp_path}", f"--config.data.dir={covid_data_dir}", "--config.mesh.data=1",
         "--config.log_every=1", "--config.total_steps=500"]
  env = cpu_env()
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
  metrics = tmp_path / "metrics.jsonl"
  deadline = time.time() + 300
  while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
    assert proc.poll() is None and time.time() < deadline
    time.sleep(0.05)
  # Both signals land together (the process is stopped while they are sent): the first asks
  # for a clean stop, the second must end the process without waiting for anything.
  proc.send_signal(signal.SIGSTOP)
  proc.send_signal(signal.SIGTERM)
  proc.send_signal(signal.SIGINT)
  proc.send_signal(signal.SIGCONT)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode in (128 + signal.SIGINT, 128 + signal.SIGTERM), err[-2000:]
  assert "second stop signal" in err and "checkpoint" in err


def _export_of(six, tmp_path, change):
  ts, params = weights.load_model(resolve.resolved(medmllm_tiny.get_config()), str(six))
  named = named_params.to_named(jax.tree.map(np.asarray, params), ts.logical_specs)
  change(named)
  (tmp_path / "export").mkdir(parents=True)
  save_file(named, str(tmp_path / "export" / "model.safetensors"))
  return ts, tmp_path / "export"


@pytest.mark.parametrize("change, error", [
    (lambda n: n.__setitem__("image.norm.scale", np.full_like(n["image.norm.scale"], np.nan)),
     "image.norm.scale.* non-finite"),
    (lambda n: n.__setitem__("text.norm.bias", n["text.norm.bias"].astype(np.float64)),
     "text.norm.bias.* is float64, the model needs float32"),
    (lambda n: n.__setitem__("logit_bias", np.asarray(-10, np.int32)),
     "logit_bias.* is int32"),
], ids=["nan_weights", "float64_weights", "int32_weights"])
def test_init_from_checks_what_it_loads(six, tmp_path, change, error):
  ts, export = _export_of(six, tmp_path, change)
  with pytest.raises(ValueError, match=error):
    weights.load_params(str(export), ts.abstract_state["params"], ts.logical_specs)


def test_init_from_casts_only_when_asked_and_losslessly(six, tmp_path):
  half = lambda n: n.__setitem__("text.norm.bias", n["text.norm.bias"].astype(np.float16))
  ts, export = _export_of(six, tmp_path, half)
  loaded = weights.load_params(str(export), ts.abstract_state["params"], ts.logical_specs)
  assert loaded["text"]["norm"]["bias"].dtype == np.float32  # float16 -> float32 loses nothing
  wide = lambda n: n.__setitem__("text.norm.bias", n["text.norm.bias"].astype(np.float64))
  ts, export = _export_of(six, tmp_path / "b", wide)
  loaded = weights.load_params(str(export), ts.abstract_state["params"], ts.logical_specs,
                               allow_cast=True)
  assert loaded["text"]["norm"]["bias"].dtype == np.float32


@pytest.mark.slow
def test_soak_random_sigkills_end_with_the_uninterruptedsaved(straight, covid_data_dir,
                                                                tmp_path):
  """SIGKILL at 10 random moments (during steps, saves and metric writes), each time
  restarted: the same final params as an uninterrupted run, every step logged once."""
  workdir = tmp_path / "soak"
  cmd = cli(workdir, covid_data_dir, "--config.checkpoint_every=2")
  rng = random.Random(0)
  kills = 0
  while kills < 10:
    proc = subprocess.Popen(cmd, env=cpu_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metrics = workdir / "metrics.jsonl"
    before = len(metrics.read_text().splitlines()) if metrics.exists() else 0
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:  # until it trains again
      if metrics.exists() and len(metrics.read_text().splitlines()) > before:
        break
      time.sleep(0.02)
    if proc.poll() is not None:
      break  # finished: no moment left to kill
    time.sleep(rng.uniform(0.0, 1.0))  # a moment inside steps, saves, metric writes
    proc.kill()
    proc.wait()
    kills += 1
  assert kills == 10, f"the run finished after {kills} kills"
  run(cmd)
  (step, got), (_, want) = saved(workdir), saved(straight)
  assert step == STEPS
  jax.tree.map(np.testing.assert_array_equal, got, want)
  assert logged_steps(workdir) == list(range(1, STEPS + 1))
