"""Pixel normalisation and the decoded-image cache of medjax/data/transforms.py, through the
pipeline that applies them."""
import numpy as np
import pytest

from medjax.data import pipeline, transforms

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



def test_decoded_images_are_reused_and_change_no_batch(synth_sources, synth_tokenizer,
                                                       monkeypatch):
  opened = []
  real_open = transforms.Image.open
  monkeypatch.setattr(transforms.Image, "open", lambda f: opened.append(1) or real_open(f))
  records = synth_sources[0].records
  studies = sum(len(r["images"]) > 0 for r in records)
  for megabytes, decodes in ((1, studies), (0, 3 * studies)):
    example = transforms.Example(sd.synth_cfg(decoded_cache_mb=megabytes), synth_tokenizer,
                                 train=True)
    opened.clear()
    for _ in range(3):
      for r in records:
        example.row(("synth_cxr", r), np.random.default_rng(0))
    assert len(opened) == decodes  # with the cache each study once (one view each here)

  def batches(megabytes):
    it = pipeline.from_sources(sd.synth_cfg(decoded_cache_mb=megabytes), synth_sources,
                               synth_tokenizer, batch_size=8, seed=0, train=True)
    try:
      return [next(it) for _ in range(10)]  # 80 rows of 30 studies: most read 2-3 times
    finally:
      it.close()

  for a, b in zip(batches(1), batches(0)):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
