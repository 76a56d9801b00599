"""The trainer end to end on the real covid-chestxray sample, with the tiny config."""
import json
import os

import jax
import numpy as np
import pytest

from medjax.configs import medmllm_tiny
from medjax.train import loop as trainer


def _config(data_dir, **overrides):
  c = medmllm_tiny.get_config()
  c.data.dir = str(data_dir)
  c.update(overrides)
  return c


def test_tiny_run_learns_evaluates_and_writes_metrics(covid_data_dir, tmp_path, capsys):
  one_device = jax.devices()[:1]  # 8 fake devices share 2 cores: one is faster here
  config = _config(covid_data_dir, mesh=dict(data=1, fsdp=1, tensor=1), log_every=1)
  config.evals = dict(val=dict(type="val_loss", every=50, batches=2),
                      retrieval=dict(type="retrieval", every=50),
                      probe=dict(type="probe", every=100))
  history = trainer.train(config, str(tmp_path), devices=one_device)
  trained = [h for h in history if h["step"] > 0]
  losses = np.array([h["loss"] for h in trained])
  assert [h["step"] for h in history] == list(range(101))  # step 0: the evaluators alone
  # Starts near chance (ln 16 = 2.77 for 16 pairs; fewer pairs when a row lacks notes) and the
  # mean of the last 10 steps is clearly below that of the first 10 (step-to-step noise ~0.2).
  assert 2.0 < losses[0] < 3.5
  assert losses[-10:].mean() < losses[:10].mean() - 0.3, losses
  for key in ("loss", "grad_norm", "lr", "step_seconds", "examples_per_second", "mfu",
              "image_text/i2t_top1"):
    assert np.isfinite(trained[-1][key]), key
  assert trained[0]["compile_seconds"] > 0 and 0 < trained[-1]["mfu"] < 1
  # The evaluators: at step 0, every `every` steps and at the end, on held-out data.
  evaluated = {h["step"]: h for h in history if "val/image_text/loss" in h}
  assert sorted(evaluated) == [0, 50, 100]
  assert "probe/auroc" in history[0] and "probe/auroc" not in evaluated[50]
  # Held-out pairs: the tiny model fits its training batches within 100 steps (loss ~1.9) but
  # not the validation patients (~2.9, near its step-0 value): the evaluator reads other data.
  assert losses[-10:].mean() < evaluated[100]["val/image_text/loss"] - 0.3
  assert np.isfinite(evaluated[0]["val/image_text/loss"])
  for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1"):
    assert 0 <= evaluated[100][f"retrieval/{k}"] <= 1
  assert evaluated[100]["retrieval/i2t_r10"] >= evaluated[100]["retrieval/i2t_r1"]
  assert 0 <= history[-1]["probe/auroc"] <= 1
  lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [l["step"] for l in lines] == list(range(101))
  assert all(type(l["step"]) is int for l in lines)  # step 0 too, and no "step" scalar
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))
  # The run ends with a summary a person reads.
  out = capsys.readouterr().out
  assert "image_text" in out and "val/image_text/loss" in out and "100 steps" in out
  # The same workdir resumes from its last checkpoint (step 100): nothing left to train.
  assert trainer.train(config, str(tmp_path), devices=one_device) == []


def test_sharded_run_matches_single_device(covid_data_dir, tmp_path):
  """data=2 x fsdp=4 on 8 fake devices sees the same global batch as 1 device: same losses."""
  common = dict(total_steps=5, log_every=1, checkpoint_every=100)
  one = _config(covid_data_dir, mesh=dict(data=1, fsdp=1, tensor=1), **common)
  one.optim.warmup_steps = 1
  eight = _config(covid_data_dir, mesh=dict(data=2, fsdp=4, tensor=1), **common)
  eight.optim.warmup_steps = 1
  assert jax.device_count() == 8
  ref = trainer.train(one, str(tmp_path / "one"), devices=jax.devices()[:1])
  got = trainer.train(eight, str(tmp_path / "eight"))
  np.testing.assert_allclose([h["loss"] for h in got], [h["loss"] for h in ref], atol=1e-4)
  # The losses must move, or matching them would prove nothing.
  assert abs(ref[-1]["loss"] - ref[0]["loss"]) > 1e-3


def test_batch_must_divide_over_replicas(covid_data_dir, tmp_path):
  with pytest.raises(ValueError, match="batch_size=12"):
    trainer.train(_config(covid_data_dir, batch_size=12), str(tmp_path))
