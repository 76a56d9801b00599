"""Checkpoints that survive preemption: medjax-train with medjax/train/checkpoint.py.

Preemption tests run the trainer CLI in a subprocess on one CPU device (bit-reproducible), kill
or signal it, resume, and compare with an uninterrupted run bit for bit: the whole train state.
Those runs train RAD-DINO's self-distillation (rad_dino:tiny) beside image_text, so the EMA
teacher, the DINO / iBOT centres, the local crops and the hidden patches are saved and resumed
too."""
import copy
import json
import signal
import subprocess
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from safetensors.numpy import save_file

from medjax import named_params, sharding
from medjax.configs import medmllm_tiny, resolve
from medjax.data import pipeline
from medjax.train import (
  checkpoint,
  loop as trainer,
  stages,
  state as state_lib,
  step as step_lib,
  weights,
)

from trainer_runs import STEPS, cli, cpu_env, digests, run, saved

REPO = Path(__file__).resolve().parents[2]
ITEMS = ("state", "meta")  # the items of a medjax checkpoint step
ONE = jax.devices()[:1]  # in-process runs of the 1-device tiny mesh


def _tiny(data_dir, **overrides):
  c = medmllm_tiny.get_config()
  c.data.dir = str(data_dir)
  c = resolve.resolved(c)
  c.mesh = dict(data=1, fsdp=1, tensor=1)
  c.update(overrides)
  return c


def _wait_for_step(workdir, step, proc, timeout=600):
  metrics = Path(workdir) / "metrics.jsonl"
  deadline = time.time() + timeout
  while time.time() < deadline:
    if metrics.exists():
      lines = metrics.read_text().splitlines()
      if lines and json.loads(lines[-1])["step"] >= step:
        return
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    time.sleep(0.02)
  raise TimeoutError(f"no step {step} in {metrics}")


def _assert_same(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_sigterm_saves_exits_0_and_resume_is_bit_identical(straight, covid_data_dir, tmp_path):
  cmd = cli(tmp_path, covid_data_dir)
  proc = subprocess.Popen(cmd, env=cpu_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  _wait_for_step(tmp_path, 10, proc)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  stopped, _ = saved(tmp_path)
  assert 10 <= stopped < STEPS, stopped  # it stopped early, at a step boundary, and saved
  run(cmd)
  (step, state), (ref_step, ref) = saved(tmp_path), saved(straight)
  assert step == ref_step == STEPS
  assert {"teacher", "objectives"} <= set(state) and set(state) == set(ref)
  _assert_same(state, ref)  # params, Adam moments, EMA teacher, centres, counters
  assert np.abs(state["objectives"]["dino"]["center"]).max() > 0
  assert digests(tmp_path) == digests(straight)  # every batch, before and after the stop


def test_kill_9_during_an_async_save_resumes_from_the_last_complete_step(
    straight, covid_data_dir, tmp_path):
  cmd = cli(tmp_path, covid_data_dir, "--config.checkpoint_every=5")
  proc = subprocess.Popen(cmd, env=cpu_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  ckpt_dir = tmp_path / "checkpoints"
  _wait_for_step(tmp_path, 6, proc)
  deadline = time.time() + 300
  while not (ckpt_dir / "5").is_dir():  # the first save is complete
    assert time.time() < deadline and proc.poll() is None, "step 5 was never saved"
  # Freeze the process the moment a later save is seen in progress (a temporary step dir), and
  # check it still is: a save that finished between the look and the freeze is not a kill
  # "during a save", so let the process go on to the next save and try again.
  while True:
    while not any("tmp" in p.name for p in ckpt_dir.iterdir()):
      assert time.time() < deadline and proc.poll() is None, "no save in progress was seen"
    proc.send_signal(signal.SIGSTOP)
    half_written = [p.name for p in ckpt_dir.iterdir() if "tmp" in p.name]
    if half_written:
      break
    proc.send_signal(signal.SIGCONT)
  proc.kill()  # SIGKILL reaches a stopped process too
  proc.wait()
  complete, _ = saved(tmp_path)
  assert [p.name for p in ckpt_dir.iterdir() if "tmp" in p.name] == half_written
  run(cmd)
  (step, state), (_, ref) = saved(tmp_path), saved(straight)
  assert step == STEPS and complete < STEPS
  _assert_same(state, ref)


def test_restore_onto_other_meshes(covid_data_dir, tmp_path):
  config = _tiny(covid_data_dir, mesh=dict(data=2, fsdp=4, tensor=1), total_steps=4,
                 checkpoint_every=2, log_every=2)
  trainer.train(config, str(tmp_path))
  restored = {}
  for n, shape in ((8, dict(data=2, fsdp=4)), (4, dict(data=1, fsdp=4)), (1, dict(data=1))):
    mesh = sharding.make_mesh(shape, jax.devices()[:n])
    target = state_lib.setup(config, mesh).abstract_state
    with ocp.CheckpointManager(tmp_path / "checkpoints", item_names=ITEMS) as mgr:
      state = mgr.restore(4, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    params = state["state"]["params"]
    assert len(jax.tree.leaves(params)[0].sharding.device_set) == n
    restored[n] = jax.tree.map(np.asarray, params)
  _assert_same(restored[4], restored[8])
  _assert_same(restored[1], restored[8])
  # The trainer resuming onto another mesh: test_multiprocess's two-process checkpoint resumed
  # by one process on one device.


def test_nonfinite_step_is_skipped_counted_and_neversaved(covid_data_dir, tmp_path):
  config = _tiny(covid_data_dir)
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  ts = state_lib.setup(config, mesh)
  step = jax.jit(step_lib.make_train_step(ts, stages.plan(config)[0]))
  data_iter = pipeline.make_iterator(config.data, batch_size=config.batch_size, seed=0)
  batch = next(data_iter)
  poisoned = dict(batch, image=np.where(np.arange(16)[:, None, None, None] == 3, np.nan,
                                        batch["image"]).astype(np.float32))
  state = state_lib.init(config, ts)
  before = jax.tree.map(np.asarray, state)
  state, metrics = step(state, poisoned)
  assert not np.isfinite(metrics["loss"]) and int(metrics["skipped_steps"]) == 1
  assert int(state["nonfinite_in_row"]) == 1
  _assert_same(jax.tree.map(np.asarray, state["params"]), before["params"])
  _assert_same(jax.tree.map(np.asarray, state["opt_state"]), before["opt_state"])
  state, metrics = step(state, batch)
  assert int(state["nonfinite_in_row"]) == 0 and int(state["skipped_steps"]) == 1
  mgr = checkpoint.manager(str(tmp_path), config)
  checkpoint.save(mgr, 2, state, dict(config=config.to_dict()))
  mgr.wait_until_finished()
  mgr.close()
  _, params = saved(tmp_path)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_run_stops_after_k_nonfinite_steps_in_a_row_with_finite_checkpoints(
    covid_data_dir, tmp_path):
  config = _tiny(covid_data_dir, total_steps=20, log_every=5, checkpoint_every=1,
                 max_nonfinite_in_row=3)
  config.optim.lr = 1e38  # the first update overflows the params, every later loss is not finite
  with pytest.raises(FloatingPointError, match="non-finite"):
    trainer.train(config, str(tmp_path), devices=ONE)
  with ocp.CheckpointManager(tmp_path / "checkpoints", item_names=ITEMS) as mgr:
    steps = mgr.all_steps()
  assert steps
  for s in steps:
    _, state = saved(tmp_path, s)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state)), s


def test_clear_errors_for_other_configs_models_and_unwritable_dirs(covid_data_dir, tmp_path):
  first = _tiny(covid_data_dir, total_steps=2, log_every=1)
  trainer.train(first, str(tmp_path / "a"), devices=ONE)
  other = _tiny(covid_data_dir, total_steps=2, log_every=1)
  other.model.image.width = 32
  with pytest.raises(ValueError, match=r"another config(.|\n)*model\.image\.width"):
    trainer.train(other, str(tmp_path / "a"), devices=ONE)
  other.init_from = str(tmp_path / "a")
  with pytest.raises(ValueError, match="does not fit this model"):
    trainer.train(other, str(tmp_path / "b"), devices=ONE)
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  with pytest.raises(OSError, match="not writable"):
    trainer.train(first, str(blocker / "run"), devices=ONE)


def test_init_from_loads_params_only(covid_data_dir, tmp_path):
  first = _tiny(covid_data_dir, total_steps=3, log_every=3)
  trainer.train(first, str(tmp_path / "a"), devices=ONE)
  want = saved(tmp_path / "a")[1]["params"]
  ts = state_lib.setup(first, sharding.make_mesh(first.mesh, jax.devices()[:1]))
  got = weights.load_params(str(tmp_path / "a"), ts.abstract_state["params"], ts.logical_specs)
  _assert_same(jax.tree.map(np.asarray, got), want)
  # Exported weights (safetensors, one tensor per layer) load to the same params, from the
  # export directory or the file; a tensor of another shape is refused by name.
  (tmp_path / "export").mkdir()
  named = named_params.to_named(got, ts.logical_specs)
  save_file(named, str(tmp_path / "export" / "model.safetensors"))
  for path in (tmp_path / "export", tmp_path / "export" / "model.safetensors"):
    loaded = weights.load_params(str(path), ts.abstract_state["params"], ts.logical_specs)
    _assert_same(jax.tree.map(np.asarray, loaded), want)
  named["image.norm.scale"] = np.ones(3, np.float32)
  save_file(named, str(tmp_path / "bad.safetensors"))
  with pytest.raises(ValueError, match="image.norm.scale: shape"):
    weights.load_params(str(tmp_path / "bad.safetensors"), ts.abstract_state["params"],
                           ts.logical_specs)
  second = _tiny(covid_data_dir, total_steps=2, log_every=1, init_from=str(tmp_path / "a"))
  history = trainer.train(second, str(tmp_path / "b"), devices=ONE)
  assert [h["step"] for h in history] == [1, 2]  # a new run: step, optimizer and data restart


def test_runs_saved_before_the_tower_options_existed_still_resume():
  config = resolve.resolved(medmllm_tiny.get_config())
  meta = dict(config=config.to_dict())
  saved = copy.deepcopy(meta)
  for tower, options in resolve.TOWER_OPTIONS.items():
    for name in options:
      del saved["config"]["model"][tower][name]
  checkpoint.check_compatible(saved, meta, "old run")  # the missing ones are the defaults
  changed = copy.deepcopy(meta)
  changed["config"]["model"]["text"]["norm"] = "post"
  with pytest.raises(ValueError, match="model.text.norm"):
    checkpoint.check_compatible(saved, changed, "old run")
