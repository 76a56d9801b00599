"""Tokenizer training (medjax.data_prep.tokenizer) and fixed-length encoding (medjax.data)."""
import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medjax.data.tokenizer import Tokenizer
from medjax.data_prep import tokenizer as tokenizer_prep

REPO = Path(__file__).resolve().parents[2]
TEXT = "Chest radiograph shows bilateral patchy opacities in the lower lobes."


@pytest.fixture(scope="module")
def model_path(covid_data_dir) -> Path:
  return Path(covid_data_dir) / "covid_cxr" / "2.0.0" / "tokenizer.model"


@pytest.fixture(scope="module")
def tok(model_path) -> Tokenizer:
  return Tokenizer(model_path)


def test_manifest_records_the_model(model_path, tok):
  entry = json.loads((model_path.parent / "manifest.json").read_text())["tokenizer"]
  assert entry["file"] == "tokenizer.model"
  assert entry["sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
  assert entry["vocab_size"] == tok.vocab_size
  assert 500 < tok.vocab_size <= 1000


def test_special_ids(tok):
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 2, 3)
  assert tok.mask_id > 3 and tok.decode([tok.mask_id]) == "[MASK]"


def test_round_trip_and_layout(tok):
  ids, mask = tok.encode(TEXT, 64)
  assert ids.dtype == np.int32 and mask.dtype == bool and ids.shape == mask.shape == (64,)
  n = int(mask.sum())
  assert mask[:n].all() and not mask[n:].any()
  assert ids[0] == tok.bos_id and ids[n - 1] == tok.eos_id and (ids[n:] == tok.pad_id).all()
  assert tok.eos_id not in ids[1:n - 1] and tok.pad_id not in ids[:n]
  assert tok.decode(ids) == TEXT


def test_truncation_keeps_bos_and_ends_with_eos(tok):
  full, full_mask = tok.encode(TEXT, 64)
  ids, mask = tok.encode(TEXT, 8)
  assert mask.all() and ids[0] == tok.bos_id and ids[-1] == tok.eos_id
  assert (ids[:7] == full[:7]).all() and full_mask.sum() > 8
  assert TEXT.startswith(tok.decode(ids))
  empty, empty_mask = tok.encode("", 4)
  assert empty.tolist() == [tok.bos_id, tok.eos_id, tok.pad_id, tok.pad_id]
  with pytest.raises(ValueError):
    tok.encode(TEXT, 1)


def test_loads_from_bytes_and_survives_pickling(tok, model_path):
  from_bytes = Tokenizer(model_path.read_bytes())
  assert (from_bytes.encode(TEXT, 32)[0] == tok.encode(TEXT, 32)[0]).all()
  assert (pickle.loads(pickle.dumps(tok)).encode(TEXT, 32)[0] == tok.encode(TEXT, 32)[0]).all()


def test_training_is_deterministic(covid_data_dir, model_path, tmp_path):
  texts = tokenizer_prep.train_texts(covid_data_dir, "covid_cxr")
  assert tokenizer_prep.train_model(texts, 1000) == model_path.read_bytes()
  # and in a fresh process, through the CLI
  out = tmp_path / "again.model"
  subprocess.run([sys.executable, "-m", "medjax.cli.prepare", "tokenizer", "--data_dir",
                  str(covid_data_dir), "--vocab_size", "1000", "--out", str(out)],
                 check=True, capture_output=True)
  assert out.read_bytes() == model_path.read_bytes()
