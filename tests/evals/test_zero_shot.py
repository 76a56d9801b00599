"""Zero-shot classification from the config's text prompts."""
import numpy as np
import pytest
from flax import nnx
from sklearn.metrics import roc_auc_score

from medjax.evals import finetune, labelled, zero_shot
from medjax.train import weights


def test_scores_are_the_cosine_gap_between_the_classes():
  negative, positive = np.eye(3)[0], np.eye(3)[1]
  images = np.array([[0.6, 0.8, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
  got = zero_shot.scores(images, np.stack([negative, positive]))
  np.testing.assert_allclose(got, [0.2, -0.2, 0.0, 1.0])
  # Images nearer the positive prompts rank above the others: the right class wins.
  assert roc_auc_score([1, 0, 0, 1], got) == 1.0


def test_zero_shot_on_the_real_sample(tiny_config, tiny_run):
  config = tiny_config
  result = finetune.run(config, str(tiny_run), "diagnosis", mode="zero_shot")
  only = result["fractions"]["0.0"]
  assert result["mode"] == "zero_shot" and list(result["fractions"]) == ["0.0"]
  assert only["train_patients"] == [0] and only["train_images"] == [0]
  assert 0.0 <= only["auroc_mean"] <= 1.0 and only["auroc_std"] == 0.0

  # The score of an image is its cosine to the mean positive prompt embedding minus that to
  # the mean negative one, computed here from the model's own methods.
  data = labelled.labelled_images(config, "covid_cxr", split="validation")
  ts, params = weights.load_model(config, str(tiny_run))
  tokenizer = weights.load_tokenizer(config, str(tiny_run))
  model = nnx.merge(ts.graphdef, params)
  images = data.images[:6]
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  image = np.asarray(model.embed_image(model.encode_image(images)[1]))
  mean = {}
  for side, prompts in config.prompts.diagnosis.items():
    ids, mask = map(np.stack, zip(*(tokenizer.encode(p, config.data.text_len) for p in prompts)))
    mean[side] = unit(np.asarray(model.embed_text(model.encode_text(ids, mask)[1])).mean(0))
  want = image @ mean["positive"] - image @ mean["negative"]
  got = zero_shot.task_scores(config, ts.graphdef, params, tokenizer, "diagnosis", images)
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert roc_auc_score(data.labels, zero_shot.task_scores(
      config, ts.graphdef, params, tokenizer, "diagnosis", data.images)) == pytest.approx(
          only["auroc_mean"])
  with pytest.raises(ValueError, match="config.prompts has no prompts for it"):
    zero_shot.task_scores(config, ts.graphdef, params, tokenizer, "survival", images)


def test_prompts_are_checked_when_the_config_is_resolved():
  from medjax.configs import base, resolve
  for field, value, message in (
      ("mortality", dict(positive=("dies.",), negative=("lives.",)), "mortality = 'mortality': is "
       "not a task"),
      ("survival", dict(positive=("survives.",), negative=()), r"survival.negative = \(\): must"),
      ("survival", dict(positive="survives.", negative=("dies.",)), "survival.positive = 'surv"),
      ("survival", dict(positive=("a.",), negative=("b.",), neutral=("c.",)), "survival = .*"
       "takes exactly positive")):
    config = base.get_config()
    config.prompts[field] = value
    with pytest.raises(resolve.ConfigError, match=f"^config.prompts.{message}"):
      resolve.resolved(config)


def test_a_run_of_another_tokenizer_is_refused(tiny_config, tiny_run, tmp_path):
  import json
  import shutil
  step = shutil.copytree(tiny_run / "checkpoints" / "2", tmp_path / "2")
  assert weights.load_tokenizer(tiny_config, str(step)).sha256 == json.loads(
      (step / "meta" / "metadata").read_text())["tokenizer_sha256"]
  meta = json.loads((step / "meta" / "metadata").read_text())
  (step / "meta" / "metadata").write_text(json.dumps(dict(meta, tokenizer_sha256="0" * 64)))
  with pytest.raises(ValueError, match="was trained with another tokenizer"):
    weights.load_tokenizer(tiny_config, str(step))
