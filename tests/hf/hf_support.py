"""What the Hugging Face interop tests share besides fixtures."""
import jax
import numpy as np

HF_MISSING = "Hugging Face interop needs the hf extra (pip install 'medjax[hf]')"


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
