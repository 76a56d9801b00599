"""Agreement of medjax.data.entities with reference labels. Prints JSON; no report text.

  python -m benchmarks.entity_agreement [--lexicon DIR] [--iu WHEEL_OR_TGZ]

1. The CheXpert labeler's `labeled_reports.csv` (in the lexicon dir): 1.0 / 0.0 / -1.0 / blank
   per observation, compared with our present / negated / uncertain / not mentioned codes.
   Accuracy per observation and overall, and F1 of each of the three stated classes.
2. Optional, the IU X-ray reports with their MeSH-derived labels (data_prep/iu_xray.py): where
   a label is stated (1 from a MeSH finding, 0 from "normal"), does the text say present?
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from medjax import contract
from medjax.data_prep import entities

CLASSES = {"present": contract.PRESENT, "negated": contract.NEGATED,
           "uncertain": contract.UNCERTAIN}
_REFERENCE_CODES = {"1.0": contract.PRESENT, "0.0": contract.NEGATED, "-1.0": contract.UNCERTAIN,
                    "": contract.NOT_MENTIONED}


def chexpert_reference(lexicon_dir=None) -> tuple[list[str], np.ndarray]:
  """Report texts and their reference codes [n, 14] in our coding, CheXpert column order."""
  root = Path(lexicon_dir) if lexicon_dir else entities.default_lexicon_dir()
  with open(root / "chexpert-labeler" / "labeled_reports.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  columns = [n.replace("_", " ").title() for n in contract.CHEXPERT]
  ref = np.array([[_REFERENCE_CODES[r[c].strip()] for c in columns] for r in rows], np.int8)
  return [r["Reports"] for r in rows], ref


def agreement(pred: np.ndarray, ref: np.ndarray, names) -> dict:
  """pred, ref: [n, len(names)] codes. Accuracy per name and overall; F1 per stated class."""
  out = {"reports": len(ref), "cells": int(ref.size),
         "accuracy": float((pred == ref).mean()),
         "per_observation_accuracy": {n: float((pred[:, i] == ref[:, i]).mean())
                                      for i, n in enumerate(names)}}
  for cls, code in CLASSES.items():
    tp = int(((pred == code) & (ref == code)).sum())
    n_pred, n_ref = int((pred == code).sum()), int((ref == code).sum())
    p = tp / n_pred if n_pred else float("nan")
    r = tp / n_ref if n_ref else float("nan")
    f1 = 2 * tp / (n_pred + n_ref) if n_pred + n_ref else float("nan")
    out[cls] = {"precision": p, "recall": r, "f1": f1, "support": n_ref}
  return out


def chexpert_agreement(lexicon_dir=None) -> dict:
  texts, ref = chexpert_reference(lexicon_dir)
  extract = entities.extractor(str(lexicon_dir) if lexicon_dir else None)
  pred = np.stack([extract(t)[:len(contract.CHEXPERT)] for t in texts])
  return agreement(pred, ref, contract.CHEXPERT)


def mesh_agreement(present: np.ndarray, ref: np.ndarray) -> dict:
  """present: [n, 14] bool, the text says present; ref: [n, 14] MeSH-derived label codes. Over
  every stated label (1 or 0): accuracy per observation and overall, F1 of 'present'."""
  pred, stated = present.astype(int), ref >= 0
  per = {n: {"accuracy": float((pred[stated[:, i], i] == ref[stated[:, i], i]).mean()),
             "stated": int(stated[:, i].sum()), "positive": int((ref[:, i] == 1).sum())}
         for i, n in enumerate(contract.CHEXPERT) if stated[:, i].any()}
  tp = int(((pred == 1) & (ref == 1)).sum())
  return {"reports": len(ref), "stated_labels": int(stated.sum()),
          "accuracy": float((pred[stated] == ref[stated]).mean()),
          "present_f1": 2 * tp / int((pred[stated] == 1).sum() + (ref == 1).sum()),
          "per_observation": per}


def iu_agreement(src, lexicon_dir=None) -> dict:
  """The IU reports of the wheel or tgz `src`, parsed and labelled as data_prep/iu_xray.py does."""
  from medjax.data_prep import iu_xray  # the benchmark needs data_prep only for this part
  extract = entities.extractor(str(lexicon_dir) if lexicon_dir else None)
  present, ref = [], []
  with tarfile.open(fileobj=io.BytesIO(iu_xray.read_tgz(Path(src))), mode="r:gz") as archive:
    for member in archive:
      if not member.isfile():
        continue
      root = ET.fromstring(archive.extractfile(member).read())
      s = {a.get("Label", ""): (a.text or "").strip() for a in root.iter("AbstractText")}
      if not (s.get("FINDINGS") or s.get("IMPRESSION")):
        continue
      labels = iu_xray.labels_from_mesh([e.text or "" for e in root.iter("major")])
      ref.append([labels.get(n, -2) for n in contract.CHEXPERT])
      text = "\n\n".join(t for t in (s.get("FINDINGS"), s.get("IMPRESSION")) if t)
      present.append(extract(text)[:len(contract.CHEXPERT)] == contract.PRESENT)
  return mesh_agreement(np.array(present), np.array(ref))


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--lexicon", default=None, help="default: MEDJAX_LEXICON or ../shared")
  parser.add_argument("--iu", default=None, help="torchxrayvision-1.5.7 wheel or the reports tgz")
  args = parser.parse_args(argv)
  result = {"chexpert_labeled_reports": chexpert_agreement(args.lexicon)}
  if args.iu:
    result["iu_xray_mesh"] = iu_agreement(args.iu, args.lexicon)
  print(json.dumps(result, indent=2))
  return result


if __name__ == "__main__":
  main()
