"""notebooks/quickstart.ipynb runs top to bottom on this CPU, as on Colab: real data converted,
the tiny config trained, the loss plotted, a probe figure printed."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_the_notebook_runs_top_to_bottom(shared_data, tmp_path):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  notebook = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
  env = dict(MEDJAX_SHARED_DATA=str(shared_data), MEDJAX_NOTEBOOK_DATA=str(tmp_path / "data"),
             MEDJAX_NOTEBOOK_WORKDIR=str(tmp_path / "run"), MEDJAX_NOTEBOOK_STEPS="30")
  old = {k: os.environ.get(k) for k in env}
  os.environ.update(env)  # the kernel inherits this process's environment
  try:
    nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
  finally:
    for k, v in old.items():
      os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
  printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                    for o in c.outputs if o.get("output_type") == "stream")
  assert "on cpu" in printed and "probe AUROC (validation patients)" in printed
  images = [o for c in notebook.cells for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
  assert images, "the loss plot was not drawn"
  assert (tmp_path / "run" / "metrics.jsonl").is_file()
