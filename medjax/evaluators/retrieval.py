"""Image <-> text retrieval on a dataset's validation pairs: for each image, is its own study's
text among the k texts nearest in the image-text space (R@k, image -> text), and for each text,
is one of its images among the k nearest images (text -> image)? Studies with the same text
(the same notes for several X-rays of a patient) count as the same text."""
from __future__ import annotations

import numpy as np

from medjax.data import pipeline
from medjax.evaluators._common import Outputs

KS = (1, 5, 10)


class Evaluator:

  def __init__(self, name, config, mesh, ts, *, dataset: str = "covid_cxr",
               split: str = "validation", chunk: int = 32):
    self.name = name
    data_cfg = config.data.copy_and_resolve_references()
    data_cfg.sources = (dict(name=dataset, split=split),)
    it = pipeline.make_iterator(data_cfg, batch_size=64, split=split, seed=0, train=False,
                                process_index=0, process_count=1)  # every process: all pairs
    rows = list(it)
    keys = ("image", "text_ids", "text_mask", "has_image", "has_text")
    pairs = {k: np.concatenate([r[k] for r in rows]) for k in keys}
    keep = pairs.pop("has_image") & pairs.pop("has_text")
    self.inputs = {k: v[keep] for k, v in pairs.items()}
    if len(self.inputs["image"]) < 2:
      raise ValueError(f"config.evals.{name}: {dataset}/{split} has fewer than 2 image-text "
                       "pairs")
    # Same text = same ids: which texts each row's image may retrieve.
    _, self.text_of = np.unique(self.inputs["text_ids"] * self.inputs["text_mask"], axis=0,
                                return_inverse=True)
    self._embed = Outputs(ts, mesh, lambda model, x: model(
        x, needs=frozenset({"image_emb", "text_emb"})), chunk)

  def run(self, state, stage) -> dict:
    del stage
    params = state["params"]
    out = self._embed(params, self.inputs)
    sim = out["image_emb"] @ out["text_emb"].T  # [images, texts], unit vectors
    same = self.text_of[:, None] == self.text_of[None, :]  # the right texts of each image
    return {f"{self.name}/{direction}_r{k}": value
            for direction, s, right in (("i2t", sim, same), ("t2i", sim.T, same.T))
            for k, value in recall_at(s, right, KS).items()}


def recall_at(similarity: np.ndarray, right: np.ndarray, ks) -> dict:
  """Share of queries (rows) with a right candidate (column) among their k most similar, per k."""
  order = np.argsort(-similarity, axis=1, kind="stable")
  hits = np.take_along_axis(right, order, axis=1)
  first = np.where(hits.any(axis=1), hits.argmax(axis=1), similarity.shape[1])
  return {k: float(np.mean(first < k)) for k in ks}
