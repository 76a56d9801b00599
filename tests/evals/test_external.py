"""External validation: fit on covid_cxr, score a second converted dataset given by path."""
import hashlib
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from medjax.evals import external, labelled


def test_datasets_by_name_version_dir_or_dataset_dir(tiny_config, covid_data_dir, tmp_path):
  version_dir = covid_data_dir / "covid_cxr" / "2.0.0"
  for ref in ("covid_cxr", str(version_dir), str(covid_data_dir / "covid_cxr")):
    builder = labelled.dataset_builder(tiny_config, ref)
    assert builder.name == "covid_cxr" and str(builder.data_dir) == str(version_dir)
  with pytest.raises(FileNotFoundError, match=f"{tmp_path}.* is no TFDS dataset"):
    labelled.dataset_builder(tiny_config, str(tmp_path))
  builder = labelled.dataset_builder(tiny_config, "covid_cxr")
  assert labelled.split_names(builder, "all") == ["train", "validation"]
  with pytest.raises(ValueError, match=r"no split \['test'\]; it has \['train', 'validation'\]"):
    labelled.split_names(builder, "train+test")


def test_fit_on_covid_cxr_and_score_the_external_dataset(tiny_config, tiny_run, external_dataset,
                                                         tmp_path):
  summary, curves, labels = external.run(
      tiny_config, str(tiny_run), "covid_cxr", str(external_dataset), "all",
      modes=("zero_shot", "linear"), fractions=(0.1, 1.0), seeds=2, samples=200)
  # The scored images are the external dataset's labelled records, every split of it, and
  # not covid_cxr's validation split (a superset of its patients).
  records = [r for split in ("train", "validation") for r in tfds.builder_from_directory(
      str(external_dataset)).as_data_source(split=split)
             if labelled.label_of(r, "diagnosis") is not None and not labelled.lateral_only(r)]
  ids = sorted(r["study_id"].decode() for r in records)
  score = summary["score"]
  assert score["dataset"] == str(external_dataset) and score["split"] == "all"
  assert score["images"] == len(records) == len(labels)
  assert score["studies_sha256"] == hashlib.sha256("\n".join(ids).encode()).hexdigest()
  assert score["positives"] == sum(labelled.label_of(r, "diagnosis") for r in records)
  a_validation = labelled.labelled_images(tiny_config, "covid_cxr", split="validation")
  assert 0 < score["images"] < len(a_validation.labels)
  a_train = labelled.labelled_images(tiny_config, "covid_cxr", split="train")
  assert summary["fit"]["images"] == len(a_train.labels)
  assert summary["fit"]["split"] == "train"

  results = summary["results"]
  assert list(results) == ["zero_shot", "linear"] and list(results["linear"]) == ["0.1", "1.0"]
  zero = results["zero_shot"]["0.0"]
  assert zero["model"]["train_patients"] == [0] and len(zero["model"]["per_seed"]) == 1
  for by_fraction in results.values():
    for row in by_fraction.values():
      for tower in ("model", "random_init"):
        got = row[tower]
        assert got["ci95"][0] <= got["auroc"] <= got["ci95"][1]
        assert np.isclose(got["auroc"], np.mean(got["per_seed"]))
      gain = row["model"]["auroc"] - row["random_init"]["auroc"]
      assert np.isclose(row["gain"]["oof_gain"], gain)
  # 10% of covid_cxr's train patients, per class: a different sample per seed; 100%: all.
  tenth = results["linear"]["0.1"]["model"]
  assert len(set(tenth["per_seed"])) == 2 and max(tenth["train_patients"]) < 0.2 * len(
      set(a_train.patients))
  assert results["linear"]["1.0"]["model"]["train_images"] == [len(a_train.labels)] * 2

  external.write(summary, curves, labels, str(tmp_path / "out"))
  assert json.loads((tmp_path / "out" / "results.json").read_text()) == summary
  table = (tmp_path / "out" / "results.md").read_text()
  assert table.count("\n| linear |") == 2 and "| zero_shot | none (0) |" in table
  assert (tmp_path / "out" / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scoring_the_patients_the_model_is_fitted_on_is_refused(tiny_config):
  with pytest.raises(ValueError, match="patients of the scored split are in covid_cxr's train"):
    external.run(tiny_config, "", "covid_cxr", "covid_cxr", "train", modes=("linear",))
