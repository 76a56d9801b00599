"""Pixel normalisation of medjax/data/transforms.py, through the pipeline that applies it."""
import numpy as np
import pytest

from medjax.data import pipeline

import synthetic_data as sd


def _batch(sources, tokenizer, train: bool, **cfg) -> dict:
  it = pipeline.from_sources(sd.synth_cfg(**cfg), sources, tokenizer, batch_size=8, seed=0,
                             train=train)
  try:
    return next(it)
  finally:
    it.close()


@pytest.mark.parametrize("train", [True, False])
def test_per_image_normalization(synth_sources, synth_tokenizer, train):
  b = _batch(synth_sources, synth_tokenizer, train, normalize="per_image")
  ref = _batch(synth_sources, synth_tokenizer, train)
  rows = b["has_image"]
  for key in ("image", "image2"):
    x = b[key][rows].reshape(rows.sum(), -1)
    np.testing.assert_allclose(x.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=1), 1.0, atol=1e-4)
    # The same pixels as with the dataset statistics, up to each image's own affine map.
    y = ref[key][rows].reshape(rows.sum(), -1)
    for xi, yi in zip(x, y):
      assert np.corrcoef(xi, yi)[0, 1] > 0.9999


def test_unknown_normalization_is_rejected(synth_sources, synth_tokenizer):
  with pytest.raises(ValueError, match="data.normalize='minmax'"):
    _batch(synth_sources, synth_tokenizer, True, normalize="minmax")
