"""Pretraining runs against random towers on the probe and few-label fine-tuning, on the real
sample (medjax/evals/payoff.py)."""
import json

import numpy as np
import pytest

from medjax.evals import finetune, linear_probe, payoff


def test_runs_against_the_same_random_towers_on_both_evaluations(tiny_config, tiny_run):
  config = tiny_config
  runs = [str(tiny_run), str(tiny_run / "checkpoints" / "1")]
  result = payoff.run(config, runs, random_inits=3, fractions=(0.1, 1.0), seeds=2)
  probe, linear, verdict = result["probe"], result["linear"], result["verdict"]
  assert probe["workdirs"] == runs and len(probe["random_init"]["per_seed"]) == 3
  assert sorted(linear) == ["0.1", "1.0"]
  # Each side's figure is that tower's few-label mean: run 1 is the step-1 checkpoint, init 2
  # the config at seed 2 (the probe's random towers are seeds 0, 1, 2 too).
  run_1 = finetune.run(config, runs[1], "diagnosis", (0.1, 1.0), 2)["fractions"]
  init_2 = finetune.run(linear_probe.seeded(config, 2), "", "diagnosis", (0.1, 1.0),
                        2)["fractions"]
  for fraction, c in linear.items():
    assert c["per_run"][1] == run_1[fraction]["auroc_mean"]
    assert c["per_init"][2] == init_2[fraction]["auroc_mean"]
    assert len(set(c["per_init"])) == 3  # three different towers
    assert np.isclose(c["pretrained"], np.mean(c["per_run"]))
    assert np.isclose(c["random_init"], np.mean(c["per_init"]))
    # Two runs against three inits: a run is the unit, so p >= 1 / C(5, 2).
    assert c["runs_vs_inits"]["p_value"] >= 0.1
    assert verdict["linear_above_random"][fraction] == (c["pretrained"] > c["random_init"])
    low, high = c["gain_ci95"]
    assert low <= c["pretrained"] - c["random_init"] <= high and high - low > 0
  assert verdict["probe_interval_above_0"] == (probe["gain"]["ci95"][0] > 0)
  # Two runs against three inits cannot reach p < 0.05: the verdict is no, whatever the gains.
  assert not verdict["probe_p_below_alpha"] and verdict["pays_off"] is False
  table = payoff.markdown(result)
  assert "| linear, 10% of the labels |" in table and "| linear, 100% of the labels |" in table
  assert "Pays off: no" in table
  json.dumps(result)  # what --out writes


def test_no_run_is_refused(tiny_config):
  with pytest.raises(ValueError, match="--workdir"):
    payoff.run(tiny_config, [])
