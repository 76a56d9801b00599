"""The end of a run in a few lines a person reads: each objective's loss at the first and last
log steps it was trained, each in-loop evaluator's first and last values, the step
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
  evaluated = _evaluations(rows)
  if evaluated:
    lines.append("  evaluators, first -> last step each ran:")
    for key, (start, first, step, last) in evaluated.items():
      lines.append(f"    {key:<34} {first:8.4f} (step {start}) -> {last:8.4f} (step {step})")
  times = [r["step_seconds"] for r in trained if "step_seconds" in r]
  if times:
    lines.append(f"  step time: {min(times):.3f}-{max(times):.3f} s over the log windows")
  if export is None and (workdir / "export" / "config.json").exists():
    export = workdir / "export"
  if export is not None:
    lines.append(f"  export: {paths.path(export)}")
  lines.append(f"  metrics: {workdir / 'metrics.jsonl'}; TensorBoard: {workdir / 'tensorboard'}")
  return "\n".join(lines)


def evaluations(workdir) -> dict[str, tuple[int, float, int, float]]:
  """Each in-loop evaluator's figure -> (the first step it ran, its value there, the last step,
  its value there), from `workdir`/metrics.jsonl; {} if nothing was logged. Step 0 runs every
  evaluator; a staged run's val figures start with their objective's stage."""
  return _evaluations(metrics_lib.logged_rows(workdir))


def _evaluations(rows: list[dict]) -> dict[str, tuple[int, float, int, float]]:
  keys, out = metrics_lib.evaluator_keys(rows), {}
  for r in rows:
    step = int(r["step"])  # runs before 2026-12-04 wrote step 0 as 0.0
    for key, value in r.items():
      if key in keys:
        out[key] = (*out.get(key, (step, value))[:2], step, value)
  return dict(sorted(out.items()))
