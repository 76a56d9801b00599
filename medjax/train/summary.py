"""The end of a run in a few lines a person reads: each objective's loss at the first and last
log steps it was trained, each in-loop evaluator's value at step 0 and at the end, the step
time, and the export if there is one. Built from metrics.jsonl, so it describes the whole run,
also one that was stopped and resumed."""
from __future__ import annotations

from medjax import objectives, paths
from medjax.train import metrics as metrics_lib


def report(workdir, export=None) -> str:
  """`export`: the directory medjax-export just wrote (any name, either format); without it, the
  demo's `<workdir>/export` if a complete medjax export is there."""
  workdir = paths.path(workdir)
  rows = metrics_lib.logged_rows(workdir)
  if not rows:
    return f"{workdir}: nothing logged yet."
  trained = [r for r in rows if r["step"] > 0]
  lines = [f"Run {workdir}: {trained[-1]['step'] if trained else 0} steps."]
  losses = [f"{name}/loss" for name in objectives.NAMES
            if any(f"{name}/loss" in r for r in trained)]
  if losses:
    lines.append("  loss, first -> last log step it was trained:")
    for key in losses:
      seen = [(r["step"], r[key]) for r in trained if key in r]
      lines.append(f"    {key[:-5]:<26} {seen[0][1]:8.4f} (step {seen[0][0]}) -> "
                   f"{seen[-1][1]:8.4f} (step {seen[-1][0]})")
  evaluated = sorted({k for r in rows if r["step"] == 0 for k in r if k != "step"})
  if evaluated:
    lines.append("  evaluators, step 0 -> last:")
    for key in evaluated:
      last = [(r["step"], r[key]) for r in rows if key in r][-1]
      lines.append(f"    {key:<34} {rows[0][key]:8.4f} -> {last[1]:8.4f} (step {last[0]})")
  times = [r["step_seconds"] for r in trained if "step_seconds" in r]
  if times:
    lines.append(f"  step time: {min(times):.3f}-{max(times):.3f} s over the log windows")
  if export is None and (workdir / "export" / "config.json").exists():
    export = workdir / "export"
  if export is not None:
    lines.append(f"  export: {export}")
  lines.append(f"  metrics: {workdir / 'metrics.jsonl'}; TensorBoard: {workdir / 'tensorboard'}")
  return "\n".join(lines)

