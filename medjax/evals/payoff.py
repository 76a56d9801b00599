"""Does pretraining pay off? One recipe's pretraining runs (one per seed) against random towers
of the same config, the two ways a team with few labels meets a tower:
- the linear probe (`linear_probe.run`): patient-grouped CV on every labelled X-ray, with the
  out-of-fold gain's patient-bootstrap interval and a permutation test of runs against inits;
- few-label linear fine-tuning (`finetune.trials`, mode linear): 1% / 10% / 100% of the train
  patients' labels, AUROC on the validation patients, each tower's mean over its label seeds,
  the runs' mean against the inits' mean with the same permutation test, and the gain's 95%
  patient-bootstrap interval over the validation patients (the heads fixed): how large a gain
  the validation split can tell from noise at each fraction.
The random towers are seeds 0, 1, ... of the config on both sides. The bar: the probe's
interval above 0 with p below `alpha`, and the runs' mean above the inits' at every fraction.
A run is the unit throughout: three pretraining seeds against eight inits can reach p 1/165.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from medjax.configs import resolve
from medjax.evals import finetune, linear_probe
from medjax.evals.labelled import labelled_images
from medjax.train import weights


def _mean_auroc(labels, score_sets) -> float:
  return float(np.mean([roc_auc_score(labels, scores) for scores in score_sets]))


def run(config, workdirs: list[str], dataset: str = "covid_cxr", random_inits: int = 8,
        fractions=(0.01, 0.1, 1.0), seeds: int = 5, alpha: float = 0.05) -> dict:
  """-> dict(probe=linear_probe.run's result, linear={fraction: comparison}, verdict)."""
  if not workdirs:
    raise ValueError("payoff: give at least one pretraining run (--workdir)")
  config = resolve.resolved(config)
  probe = linear_probe.run(config, workdirs, dataset, random_inits)

  data = labelled_images(config, dataset, "diagnosis")
  fit, val = data.select(~data.unseen), data.unseen
  labels, patients = data.labels[val], data.patients[val]
  if len(set(labels)) < 2:
    raise ValueError(f"{dataset} validation split: one diagnosis class only; no AUROC")
  ts = None

  def linear_scores(cfg, workdir):  # fraction -> the tower's validation scores, one per seed
    nonlocal ts
    ts, params = weights.load_model(cfg, workdir, ts)
    out = {}
    for fraction, _, _, scores in finetune.trials(
        cfg, ts.graphdef, params, None, "linear", "diagnosis", fit, data.images[val],
        fractions, seeds, steps=0, lr=0.0, batch_size=0):
      out.setdefault(str(fraction), []).append(scores)
    return out

  runs = [linear_scores(config, w) for w in workdirs]
  inits = [linear_scores(linear_probe.seeded(config, s), "") for s in range(random_inits)]
  linear = {}
  for fraction in runs[0]:
    a = [_mean_auroc(labels, r[fraction]) for r in runs]
    b = [_mean_auroc(labels, r[fraction]) for r in inits]
    interval = linear_probe.paired_bootstrap(
        [x for r in runs for x in r[fraction]], [x for r in inits for x in r[fraction]],
        labels, patients)
    linear[fraction] = dict(pretrained=float(np.mean(a)), random_init=float(np.mean(b)),
                            per_run=a, per_init=b, gain_ci95=interval["ci95"],
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
    lo, hi = c["gain_ci95"]
    lines.append(
        f"| linear, {float(fraction):.0%} of the labels | {c['pretrained']:.3f} | "
        f"{c['random_init']:.3f} | {c['pretrained'] - c['random_init']:+.3f} "
        f"[{lo:+.3f}, {hi:+.3f}] | {c['runs_vs_inits']['p_value']:.3f} | "
        f"{_yes(verdict['linear_above_random'][fraction])} |")
  lines += ["", "Intervals: 95% patient bootstrap (the probe: all labelled X-rays, out of fold; "
                "linear: the validation patients), the fitted heads held fixed.",
            f"Pays off: {_yes(verdict['pays_off'])} (the probe's interval above 0 with p < "
            f"{verdict['alpha']}, and the runs' mean above random at every fraction)."]
  return "\n".join(lines)
