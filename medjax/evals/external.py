"""External validation: fit on one converted dataset, score on another one's split.

A hospital checks a model on its own X-rays: the model (a workdir, step directory or export;
whatever `weights.load_model` loads) is fitted on a label fraction of dataset A's train
patients (or on nothing: zero-shot) and scored on dataset B's split, each dataset a TFDS name
under `config.data.dir` or a path to a converted dataset (labelled.dataset_builder). Modes and
fractions are those of finetune.py; tasks those of labelled.py (diagnosis, outcomes, CheXpert
observations). Beside the model, by default, a random init of the config goes through the same
fits: the gain over it says what pretraining bought.

Scores: per mode and fraction the mean AUROC over seeds with a 95% interval from resampling B's
patients (linear_probe.patient_draws; the fitted models fixed), and the model's gain over the
random init with its paired interval. A patient of B that is also in A's train split (same
source and patient id) is refused: its score would not be external.
"""
from __future__ import annotations

import hashlib
import io
import json

import matplotlib
import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from medjax import paths
from medjax.configs import resolve
from medjax.evals import finetune, linear_probe
from medjax.evals.labelled import Labelled, dataset_builder, labelled_images
from medjax.train import weights

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

MODEL, RANDOM = "model", "random_init"


def describe(config, dataset: str, split: str, data: Labelled) -> dict:
  """Where the images came from and how many: the version dir, counts, and a fingerprint of the
  scored study ids (sha256 of them sorted, one per line), which names no study."""
  digest = hashlib.sha256("\n".join(sorted(data.studies)).encode()).hexdigest()
  return dict(dataset=str(dataset_builder(config, dataset).data_dir), split=split,
              images=len(data.labels), patients=len(set(data.patient_keys())),
              positives=int(data.labels.sum()), studies_sha256=digest)


def check_external(fit: Labelled, score: Labelled, fit_dataset: str) -> None:
  """Raises if a scored patient is also one the model is fitted on."""
  shared = set(fit.patient_keys()) & set(score.patient_keys())
  if shared:
    raise ValueError(f"{len(shared)} patients of the scored split are in {fit_dataset}'s train "
                     "split, which the model is fitted on: score another split or dataset")


def run(config, workdir: str, fit_dataset: str, score_dataset: str,
        score_split: str = "validation", task: str = "diagnosis", modes=finetune.MODES,
        fractions=(0.01, 0.1, 1.0), seeds: int = 5, steps: int = 100, lr: float = 1e-4,
        batch_size: int = 32, baseline: bool = True, samples: int = 2000):
  """-> (summary dict, ROC inputs {(mode, fraction, tower): scores of seed 0}, score labels)."""
  config = resolve.resolved(config)
  unknown = set(modes) - set(finetune.MODES)
  if unknown or not modes:
    raise ValueError(f"modes {sorted(unknown) or modes}: known are {finetune.MODES}")
  score = labelled_images(config, score_dataset, task, score_split)
  if len(set(score.labels)) < 2:
    raise ValueError(f"{score_dataset} ({score_split}): {task!r} has one class only; no AUROC")
  fit = None
  if set(modes) - {"zero_shot"}:
    fit = labelled_images(config, fit_dataset, task, "train")
    check_external(fit, score, fit_dataset)
  towers = ({MODEL: workdir} if workdir else {}) | ({RANDOM: ""} if baseline or not workdir
                                                    else {})
  trials, curves, ts = {}, {}, None
  for tower, path in towers.items():
    ts, params = weights.load_model(config, path, ts)
    tokenizer = weights.load_tokenizer(config, path) if "zero_shot" in modes else None
    for mode in modes:
      for fraction, seed, picked, scores in finetune.trials(
          config, ts.graphdef, params, tokenizer, mode, task, fit, score.images, fractions,
          seeds, steps=steps, lr=lr, batch_size=batch_size):
        cell = trials.setdefault((mode, str(fraction)), {}).setdefault(
            tower, dict(scores=[], patients=[], images=[]))
        cell["scores"].append(scores)
        cell["patients"].append(len(set(fit.patients[picked])) if fit is not None else 0)
        cell["images"].append(len(picked))
        if seed == 0:
          curves[(mode, str(fraction), tower)] = scores
  summary = dict(task=task, towers={t: p or f"random init (seed {config.seed})"
                                    for t, p in towers.items()},
                 fit=describe(config, fit_dataset, "train", fit) if fit is not None else None,
                 score=describe(config, score_dataset, score_split, score),
                 results=_results(trials, score.labels, score.patient_keys(), samples))
  return summary, curves, score.labels


def _results(trials: dict, labels: np.ndarray, groups: np.ndarray, samples: int) -> dict:
  """mode -> fraction -> tower -> AUROC (mean over seeds, its patient-bootstrap interval, the
  spread and each seed's), and the model's gain over the random init with its interval."""
  results = {}
  for (mode, fraction), cell in trials.items():
    row = results.setdefault(mode, {})[fraction] = {}
    for tower, got in cell.items():
      aurocs = [float(roc_auc_score(labels, s)) for s in got["scores"]]
      row[tower] = dict(**linear_probe.bootstrap_auroc(got["scores"], labels, groups, samples),
                        auroc_std=float(np.std(aurocs)), per_seed=aurocs,
                        train_patients=got["patients"], train_images=got["images"])
    if len(cell) == 2:
      row["gain"] = linear_probe.paired_bootstrap(cell[MODEL]["scores"], cell[RANDOM]["scores"],
                                                  labels, groups, samples)
  return results


def _label(fraction: str) -> str:
  return "none" if float(fraction) == 0 else f"{float(fraction):.0%}"


def markdown(summary: dict) -> str:
  """The results as a markdown table: one row per mode and label fraction."""
  towers = list(summary["towers"])
  cell = lambda r: f"{r['auroc']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
  head = ["mode", "labels (train patients)"] + [f"{t} AUROC [95% CI]" for t in towers]
  if len(towers) == 2:
    head.append("gain [95% CI]")
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for mode, by_fraction in summary["results"].items():
    for fraction, row in by_fraction.items():
      low, high = min(row[towers[0]]["train_patients"]), max(row[towers[0]]["train_patients"])
      cells = [mode, f"{_label(fraction)} ({low if low == high else f'{low}-{high}'})"]
      cells += [cell(row[t]) for t in towers]
      if "gain" in row:
        g = row["gain"]
        cells.append(f"{g['oof_gain']:+.3f} [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]")
      lines.append("| " + " | ".join(cells) + " |")
  score = summary["score"]
  lines.append(f"\n{summary['task']}: {score['images']} images of {score['patients']} patients "
               f"({score['positives']} positive), {score['dataset']} ({score['split']}).")
  return "\n".join(lines) + "\n"


def roc_png(curves: dict, labels: np.ndarray, title: str) -> bytes:
  """PNG bytes: one panel per mode, the ROC curve of seed 0 per label fraction (one colour
  each), the model solid and the random init dashed."""
  modes = list(dict.fromkeys(mode for mode, _, _ in curves))
  fig, axes = plt.subplots(1, len(modes), figsize=(4 * len(modes), 4), squeeze=False)
  for ax, mode in zip(axes[0], modes):
    fractions = sorted({f for m, f, _ in curves if m == mode}, key=float)
    for (m, fraction, tower), scores in curves.items():
      if m == mode:
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, color=f"C{fractions.index(fraction)}", lw=1.2,
                ls="-" if tower == MODEL else "--", label=f"{tower}, labels {_label(fraction)}")
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8)
    ax.set(title=mode, xlabel="false positive rate", ylabel="true positive rate")
    ax.legend(fontsize=7, loc="lower right")
  fig.suptitle(title)
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=100)
  plt.close(fig)
  return buffer.getvalue()


def write(summary: dict, curves: dict, labels: np.ndarray, out_dir: str) -> None:
  """results.json, results.md and roc.png under `out_dir` (created), each written atomically."""
  out = paths.path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  paths.write_atomic(out / "results.json", json.dumps(summary, indent=2) + "\n")
  paths.write_atomic(out / "results.md", markdown(summary))
  paths.write_atomic(out / "roc.png", roc_png(curves, labels, f"{summary['task']}: "
                                              f"{summary['score']['dataset']}"))
