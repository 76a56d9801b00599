"""Small configs and random batches for tests, derived from medjax's own defaults and contract.

Every test batch comes from `contract.batch_specs` of a resolved config: a key, shape or dtype
changed there reaches every test (tests/test_contract.py checks that it does).
"""
from __future__ import annotations

import numpy as np

from medjax import contract
from medjax.configs import base, resolve
from medjax.data import tasks

TOWER = dict(width=32, depth=1, heads=2, mlp_dim=64)


def config(*, image_size=32, patch_size=8, channels=1, text_len=8, sentence_len=6, vocab=64,
           batch_size=4, data=None, objectives=None, **model):
  """The base config with one-block, 32-wide towers; `model` entries update `config.model`
  (sub-dicts are merged), `data` ones `config.data`, `objectives` (name -> weight) set weights.
  Resolved: derived fields filled, every field checked."""
  c = base.get_config()
  c.batch_size = batch_size
  # float32 whatever the machine: tests compare numbers across meshes and code paths at float32
  # tolerances; the bf16 policy has its own tests (tests/models/test_precision.py).
  c.model.dtype = "float32"
  c.model.proj_dim = 16
  c.model.image = dict(TOWER, patch_size=patch_size, channels=channels, image_size=image_size)
  c.model.text = dict(TOWER, vocab_size=vocab, max_len=16)
  c.model.decoder = dict(TOWER, max_len=16)
  c.model.mae_decoder = dict(TOWER)
  c.model.fusion = dict(depth=0, heads=2, mlp_dim=64)
  for key, value in model.items():
    if isinstance(value, dict):
      c.model[key].update(value)
    else:
      c.model[key] = value
  c.data.text_len, c.data.sentence_len = text_len, sentence_len
  c.data.update(data or {})
  for name, weight in (objectives or {}).items():
    c.objectives[name].weight = weight
  return resolve.resolved(c)


# Small self-distillation heads and what their objectives read: 2 local crops of 16 px, masks.
HEADS = dict(dino_head=dict(prototypes=24, hidden=32, bottleneck=16, depth=3),
             ibot_head=dict(prototypes=20, hidden=32, bottleneck=16, depth=2))
MULTI_CROP = dict(local_crops=2, local_crop_size=16, ibot_mask_probability=0.75)


# Share of rows with each kind of input: every batch has rows lacking each of them.
FLAG_RATES = {"has_image": 0.8, "has_text": 0.8, "has_sentence": 0.7,
              "has_findings_impression": 0.6}


def random_batch(cfg, batch_size: int | None = None, seed: int = 0) -> dict:
  """A global batch of every `contract.batch_specs(cfg.data)` key with plausible content: ids
  in the vocabulary (past the special ids), padding masks with real prefixes of random length,
  flags with FLAG_RATES, repeated patients, multi-hot entities, MLM weights on a share of the
  real tokens. A key this module does not know gets random values of its dtype."""
  b = batch_size or cfg.batch_size
  rng = np.random.default_rng(seed)
  vocab = cfg.model.text.vocab_size
  out = {}
  for key, (shape, dtype) in contract.batch_specs(cfg.data).items():
    full = (b, *shape)
    if key == "ibot_patches":  # patch indices as the pipeline draws them
      d = cfg.data
      rows = [tasks.hidden_patches(rng, (d.image_size // d.patch_size) ** 2, shape[-1],
                                   d.ibot_mask_probability, d.ibot_mask_ratio)
              for _ in range(b * shape[0])]
      out[key] = np.stack(rows).reshape(full)
    elif key in FLAG_RATES:
      out[key] = rng.random(b) < FLAG_RATES[key]
    elif key == "patient":
      out[key] = rng.integers(0, max(2, b // 3), b).astype(np.int32)  # repeats across devices
    elif np.dtype(dtype) == np.bool_ and not shape:  # a flag this module does not know
      out[key] = rng.random(b) < 0.5
    elif np.dtype(dtype) == np.bool_:  # padding masks: a real prefix of 2..length tokens
      out[key] = np.arange(shape[-1])[None] < rng.integers(2, shape[-1] + 1, (b, 1))
    elif np.issubdtype(dtype, np.integer):
      out[key] = rng.integers(len(contract.SPECIAL_IDS) + 1, vocab, full).astype(dtype)
    elif key.endswith("_entities"):
      out[key] = (rng.random(full) < 0.3).astype(dtype)
    else:
      out[key] = rng.random(full).astype(dtype)
  if "mlm_weights" in out:  # MLM predicts some real tokens of the text
    out["mlm_weights"] = (out["text_mask"] & (rng.random(out["text_mask"].shape) < 0.3)
                          ).astype(np.float32)
    out["mlm_weights"][:, 1] = out["text_mask"][:, 1]  # at least one per row
  return out
