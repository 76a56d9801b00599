"""Plots each objective's loss from a run's metrics.jsonl into one PNG (a panel per objective).

  medjax-plot --workdir runs/medmllm_s --out docs/figures/medmllm_s_losses.png
"""
import argparse
import json
import math
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def load(workdir: str) -> dict:
  """objective -> (steps, losses), from the '<objective>/loss' scalars."""
  curves = defaultdict(lambda: ([], []))
  with open(f"{workdir}/metrics.jsonl", encoding="utf-8") as f:
    for row in map(json.loads, f):
      for key, value in row.items():
        if key.endswith("/loss"):
          curves[key[:-len("/loss")]][0].append(row["step"])
          curves[key[:-len("/loss")]][1].append(value)
  return dict(curves)


def plot(curves: dict, out: str, title: str) -> None:
  cols = 3
  rows = math.ceil(len(curves) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
  by_start = sorted(curves.items(), key=lambda c: c[1][0][0])  # in the order stages ran
  for ax, (name, (steps, losses)) in zip(axes.flat, by_start):
    ax.plot(steps, losses, lw=1)
    ax.set_title(name, fontsize=10)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=8)
  for ax in list(axes.flat)[len(curves):]:
    ax.axis("off")
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(out, dpi=100)


def run(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--title", default="")
  args = parser.parse_args(argv)
  plot(load(args.workdir), args.out, args.title or args.workdir)


if __name__ == "__main__":
  run()
