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


def _views(sources, tokenizer, **cfg):
  """The two training views, per_image-normalised, of whole-image crops of the rows whose image
  is not blank (the synthetic records hold some of one grey level)."""
  b = _batch(sources, tokenizer, True, normalize="per_image", crop_scale=(1.0, 1.0), **cfg)
  rows = b["has_image"] & (b["image"].std(axis=(1, 2, 3)) > 0.5)
  assert rows.sum() >= 3
  return b["image"][rows, ..., 0], b["image2"][rows, ..., 0]


def _ranks(x):
  return np.argsort(np.argsort(x.reshape(len(x), -1), axis=1), axis=1)


def test_without_photometric_augmentation_per_image_views_differ_only_by_crop(
    synth_sources, synth_tokenizer):
  a, b = _views(synth_sources, synth_tokenizer)
  # The affine jitter is undone by per_image normalisation (up to its clipping).
  assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999


def test_gamma_changes_the_tone_curve_not_the_pixel_order(synth_sources, synth_tokenizer):
  plain, _ = _views(synth_sources, synth_tokenizer)
  mapped, _ = _views(synth_sources, synth_tokenizer, gamma=(3.0, 3.0))
  for p, m in zip(plain, mapped):
    assert np.corrcoef(p.ravel(), m.ravel())[0, 1] < 0.99  # not an affine map of the pixels
  # x ** g is monotone: the brightness order of the pixels stays (up to clipping and ties).
  assert (_ranks(plain) == _ranks(mapped)).mean() > 0.5


def test_blur_smooths_the_view(synth_sources, synth_tokenizer):
  def roughness(x):  # mean absolute difference of horizontal neighbours, per unit std
    return np.abs(np.diff(x, axis=-1)).mean()

  sharp, _ = _views(synth_sources, synth_tokenizer)
  blurred, blurred2 = _views(synth_sources, synth_tokenizer, blur_probability=1.0,
                             blur_sigma=(1.5, 2.0))
  assert roughness(blurred) < 0.8 * roughness(sharp)
  assert roughness(blurred2) < 0.8 * roughness(sharp)
