"""The end-of-run summary (medjax/train/summary.py) read off a metrics.jsonl like a run's."""
import json

from medjax.train import summary


def _run(workdir, rows):
  workdir.mkdir()
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return workdir


ROWS = [
    {"step": 0.0, "probe/auroc": 0.61},  # as the trainer writes step 0
    {"step": 10, "image_level/loss": 3.4, "step_seconds": 0.9},
    {"step": 20, "image_level/loss": 2.1, "step_seconds": 0.6},
    {"step": 30, "mlm/loss": 8.0, "probe/auroc": 0.55, "step_seconds": 0.7},
]


def test_losses_evaluators_and_step_times_from_first_to_last(tmp_path):
  out = summary.report(_run(tmp_path / "run", ROWS))
  assert "30 steps" in out
  assert "image_level" in out and "3.4000 (step 10) ->   2.1000 (step 20)" in out
  assert "0.6100 (step 0) ->   0.5500 (step 30)" in out and "0.600-0.900 s" in out
  assert "export:" not in out  # nothing exported yet


def test_names_the_export_just_written_not_the_default_one(tmp_path, monkeypatch):
  run = _run(tmp_path / "run", ROWS)
  (run / "export").mkdir()
  (run / "export" / "config.json").write_text("{}")
  assert f"export: {run / 'export'}" in summary.report(run)
  hf = tmp_path / "hf"  # medjax-export --format hf --out elsewhere
  hf.mkdir()
  out = summary.report(run, hf)
  assert f"export: {hf}" in out and f"{run / 'export'}\n" not in out
  monkeypatch.chdir(tmp_path)  # a relative --out is printed as the absolute path it names
  assert f"export: {hf}" in summary.report(run, "hf")


def test_evaluations_are_each_figure_where_it_first_and_last_ran(tmp_path):
  # A staged run: the val loss of the second stage's objective starts with that stage.
  rows = ROWS + [{"step": 40, "val/mlm/loss": 7.5}, {"step": 50, "val/mlm/loss": 7.1}]
  run = _run(tmp_path / "run", [dict(ROWS[0], **{"val/mae/loss": 1.6})] + rows[1:])
  assert summary.evaluations(run) == {"probe/auroc": (0, 0.61, 30, 0.55),
                                      "val/mae/loss": (0, 1.6, 0, 1.6),
                                      "val/mlm/loss": (40, 7.5, 50, 7.1)}
  assert summary.evaluations(tmp_path / "nothing_here") == {}
