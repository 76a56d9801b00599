"""A small linear probe while pretraining runs: the image tower's pooled features (frozen) of a
labelled dataset's train split fit a logistic regression, scored by AUROC on its validation
split (patients never trained on). Only pixels are read (medjax/evals/labelled.py)."""
from __future__ import annotations

from sklearn.metrics import roc_auc_score

from medjax.evals import labelled
from medjax.evaluators._common import Outputs


class Evaluator:

  def __init__(self, name, config, mesh, ts, *, dataset: str = "covid_cxr",
               task: str = "diagnosis", chunk: int = 32):
    self.name = name
    data = labelled.labelled_images(config, dataset, task)
    self.labels, self.unseen = data.labels, data.unseen
    if len(set(self.labels[self.unseen])) < 2 or len(set(self.labels[~self.unseen])) < 2:
      raise ValueError(f"config.evals.{name}: {dataset} needs both classes of {task!r} in its "
                       "train and validation splits")
    self.images = data.images
    self._pooled = Outputs(ts, mesh, lambda model, x: {"pooled": model.encode_image(x["image"])[1]},
                           chunk)

  def run(self, state, stage) -> dict:
    del stage
    params = state["params"]
    features = self._pooled(params, {"image": self.images})["pooled"]
    train = ~self.unseen
    probe = labelled.logistic_probe().fit(features[train], self.labels[train])
    scores = probe.predict_proba(features[self.unseen])[:, 1]
    return {f"{self.name}/auroc": float(roc_auc_score(self.labels[self.unseen], scores))}

