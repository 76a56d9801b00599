"""Plots a run's metrics.jsonl: each objective's loss, and the in-loop evaluators' results.

  medjax-plot --workdir runs/medmllm_s --out docs/figures/medmllm_s_losses.png \
      --evals_out docs/figures/medmllm_s_evals.png
"""
import argparse
import math
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from medjax import objectives  # noqa: E402
from medjax.train import metrics  # noqa: E402


def curves(workdir) -> tuple[dict, dict]:
  """(objective -> (steps, losses), evaluator metric -> (steps, values)) of a run; a step
  logged twice (a resumed run) counts once (metrics.logged_rows)."""
  losses, evals = defaultdict(lambda: ([], [])), defaultdict(lambda: ([], []))
  rows = metrics.logged_rows(workdir)
  evaluated = metrics.evaluator_keys(rows)
  for row in rows:
    for key, value in row.items():
      name = key[:-len("/loss")]
      target = (losses, name) if key.endswith("/loss") and name in objectives.NAMES else \
          (evals, key) if key in evaluated else None
      if target:
        target[0][target[1]][0].append(row["step"])
        target[0][target[1]][1].append(value)
  return dict(losses), dict(evals)


def plot(panels: dict, out: str, title: str, ylabel: str) -> None:
  cols = 3
  rows = max(1, math.ceil(len(panels) / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
  by_start = sorted(panels.items(), key=lambda c: (c[1][0][0], c[0]))  # in the order they ran
  for ax, (name, (steps, values)) in zip(axes.flat, by_start):
    ax.plot(steps, values, lw=1, marker="o" if len(steps) < 20 else None, ms=3)
    ax.set_title(name, fontsize=10)
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=8)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis("off")
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(out, dpi=100)


def run(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--out", required=True, help="PNG of the objectives' losses")
  parser.add_argument("--evals_out", default="", help="PNG of the evaluators' results")
  parser.add_argument("--title", default="")
  args = parser.parse_args(argv)
  losses, evals = curves(args.workdir)
  if not losses:
    parser.error(f"{args.workdir}/metrics.jsonl has no objective losses")
  plot(losses, args.out, args.title or args.workdir, "loss (log-window mean)")
  if args.evals_out:
    if not evals:
      parser.error(f"{args.workdir}: no evaluator results (config.evals was empty)")
    plot(evals, args.evals_out, (args.title or args.workdir) + ": evaluators", "value")


if __name__ == "__main__":
  run()
