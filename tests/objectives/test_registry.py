import ml_collections
import numpy as np
import pytest

from medjax import objectives


def _outputs():
  emb = np.eye(3, dtype=np.float32)
  return dict(image_emb=emb, text_emb=emb, logit_scale=np.float32(0.0),
              logit_bias=np.float32(0.0))


def test_weights_scale_the_total_and_zero_removes():
  cfg = ml_collections.ConfigDict(dict(image_text=dict(weight=0.5, kind="clip")))
  total, metrics = objectives.total_loss(_outputs(), None, cfg)
  np.testing.assert_allclose(total, 0.5 * metrics["image_text/loss"], rtol=1e-6)
  cfg.image_text.weight = 0.0
  total, metrics = objectives.total_loss(_outputs(), None, cfg)
  assert float(total) == 0.0 and not metrics


def test_unknown_objective_is_rejected():
  cfg = ml_collections.ConfigDict(dict(imgae_text=dict(weight=1.0)))
  with pytest.raises(ValueError, match="imgae_text"):
    objectives.total_loss(_outputs(), None, cfg)
