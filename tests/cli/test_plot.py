"""medjax-plot's curves (medjax/cli/plot.py) read off a staged run's metrics.jsonl."""
import json

from medjax.cli import plot


def test_curves_split_objectives_from_evaluators_across_stages(tmp_path):
  rows = [{"step": 0, "val/mae/loss": 1.6, "probe/auroc": 0.6},
          {"step": 10, "mae/loss": 1.5, "loss": 1.5},
          {"step": 20, "mlm/loss": 8.0, "loss": 8.0, "val/mlm/loss": 7.0, "probe/auroc": 0.5}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  losses, evals = plot.curves(tmp_path)
  assert losses == {"mae": ([10], [1.5]), "mlm": ([20], [8.0])}
  # The text stage's val loss is an evaluator curve too, though step 0 did not log it.
  assert evals == {"val/mae/loss": ([0], [1.6]), "probe/auroc": ([0, 20], [0.6, 0.5]),
                   "val/mlm/loss": ([20], [7.0])}
