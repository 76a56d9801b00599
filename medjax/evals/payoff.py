"""Does pretraining pay off? One recipe's pretraining runs (one per seed) against random towers
of the same config, the two ways a team with few labels meets a tower:
- the linear probe (`linear_probe.run`): patient-grouped CV on every labelled X-ray, with the
  out-of-fold gain's patient-bootstrap interval and a permutation test of runs against inits;
- few-label linear fine-tuning (`finetune.run`, mode linear): 1% / 10% / 100% of the train
  patients' labels, AUROC on the validation patients, each tower's mean over its label seeds,
  the runs' mean against the inits' mean with the same permutation test.
The random towers are seeds 0, 1, ... of the config on both sides. The bar: the probe's
interval above 0 with p below `alpha`, and the runs' mean above the inits' at every fraction.
A run is the unit throughout: three pretraining seeds against eight inits can reach p 1/165.
"""
from __future__ import annotations

import numpy as np

from medjax.configs import resolve
from medjax.evals import finetune, linear_probe


def _seeded(config, seed: int):
  seeded = config.copy_and_resolve_references()
  seeded.seed = seed
  return seeded


def run(config, workdirs: list[str], dataset: str = "covid_cxr", random_inits: int = 8,
        fractions=(0.01, 0.1, 1.0), seeds: int = 5, alpha: float = 0.05) -> dict:
  """-> dict(probe=linear_probe.run's result, linear={fraction: comparison}, verdict)."""
  if not workdirs:
    raise ValueError("payoff: give at least one pretraining run (--workdir)")
  config = resolve.resolved(config)
  probe = linear_probe.run(config, workdirs, dataset, random_inits)

  def means(cfg, workdir):  # fraction -> the tower's mean AUROC over its label seeds
    got = finetune.run(cfg, workdir, "diagnosis", fractions, seeds, "linear", dataset)
    return {f: r["auroc_mean"] for f, r in got["fractions"].items()}

  runs = [means(config, w) for w in workdirs]
  inits = [means(_seeded(config, s), "") for s in range(random_inits)]
  linear = {}
  for fraction in runs[0]:
    a, b = [r[fraction] for r in runs], [r[fraction] for r in inits]
    linear[fraction] = dict(pretrained=float(np.mean(a)), random_init=float(np.mean(b)),
                            per_run=a, per_init=b,
                            runs_vs_inits=linear_probe.permutation_test(a, b))
  gain = probe["gain"]
  verdict = dict(
      probe_interval_above_0=gain["ci95"][0] > 0,
      probe_p_below_alpha=gain["runs_vs_inits"]["p_value"] < alpha,
      linear_above_random={f: c["pretrained"] > c["random_init"] for f, c in linear.items()},
      alpha=alpha)
  verdict["pays_off"] = bool(verdict["probe_interval_above_0"] and
                             verdict["probe_p_below_alpha"] and
                             all(verdict["linear_above_random"].values()))
  return dict(probe=probe, linear=linear, verdict=verdict)


def _yes(ok: bool) -> str:
  return "yes" if ok else "no"


def markdown(result: dict) -> str:
  probe, verdict = result["probe"], result["verdict"]
  gain = probe["gain"]
  low, high = gain["ci95"]
  lines = [
      f"{len(probe['workdirs'])} pretraining run(s) against "
      f"{len(probe['random_init']['per_seed'])} random towers; {probe['task']}, "
      f"{probe['images']} X-rays of {probe['patients']} patients.",
      "",
      "| comparison | pretrained | random towers | gain | p (runs vs inits) | above |",
      "|---|---|---|---|---|---|",
      f"| probe, patient-grouped CV | {probe['pretrained']['auroc_mean']:.3f} | "
      f"{probe['random_init']['auroc_mean']:.3f} | {gain['oof_gain']:+.3f} "
      f"[{low:+.3f}, {high:+.3f}] | {gain['runs_vs_inits']['p_value']:.3f} | "
      f"{_yes(verdict['probe_interval_above_0'] and verdict['probe_p_below_alpha'])} |"]
  for fraction, c in result["linear"].items():
    lines.append(
        f"| linear, {float(fraction):.0%} of the labels | {c['pretrained']:.3f} | "
        f"{c['random_init']:.3f} | {c['pretrained'] - c['random_init']:+.3f} | "
        f"{c['runs_vs_inits']['p_value']:.3f} | {_yes(verdict['linear_above_random'][fraction])} |")
  lines += ["", f"Pays off: {_yes(verdict['pays_off'])} (the probe's interval above 0 with p < "
                f"{verdict['alpha']}, and the runs' mean above random at every fraction)."]
  return "\n".join(lines)
