"""Hugging Face interop: export medjax towers as transformers models, import pretrained ones.

  export.py     medjax-export --format hf: SiglipVisionModel (Dinov2Model with a class token)
                and MegatronBertModel (BertModel if post-LN) directories, projections,
                tokenizer, preprocessor config and model card
  load.py       --config.init_from=hf:DIR: ViTModel, Dinov2Model, SiglipVisionModel, BertModel
                or MegatronBertModel weights into a medjax tower
  tokenizer.py  --config.data.tokenizer=hf:DIR: a Hugging Face (WordPiece) tokenizer in the
                pipeline
  names.py      the name and config tables; convert.py the tensor layouts

torch and transformers are the `hf` extra (pip install 'medjax[hf]'), imported only here and
only when used: training without Hugging Face towers needs neither.
"""
from __future__ import annotations

import importlib

from medjax import paths

EXTRA = "pip install 'medjax[hf]'"


def local_dir(path: str, field: str) -> str:
  """`path` (of `field`=hf:PATH) as an absolute local directory; transformers reads only those
  here (never the Hub: medjax reads only what the user pointed at)."""
  if paths.is_url(path):
    raise ValueError(f"{field}=hf:{path}: Hugging Face models are read from a local directory; "
                     "copy it there first")
  out = paths.path(path)
  if not out.is_dir():
    raise FileNotFoundError(f"{field}=hf:{path}: no such directory")
  return str(out)


def require(*modules: str) -> list:
  """The named modules of the `hf` extra (torch, transformers, tokenizers), imported on first
  use; a missing one is an ImportError that says how to install them."""
  out = []
  for name in modules:
    try:
      out.append(importlib.import_module(name))
    except ImportError as e:
      raise ImportError(f"Hugging Face interop needs {name} (the hf extra): {EXTRA}") from e
  return out
