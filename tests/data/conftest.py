"""Fixtures of synthetic in-memory sources and a tokenizer trained on their text."""
import pytest

from medjax.data.mixture import Source
from medjax.data.tokenizer import Tokenizer
from medjax.data_prep import tokenizer as tokenizer_prep

import synthetic_data


@pytest.fixture(scope="session")
def synth_tokenizer() -> Tokenizer:
  return Tokenizer(tokenizer_prep.train_model(list(synthetic_data.PHRASES) * 3, vocab_size=120))


@pytest.fixture
def synth_sources():
  return [Source("synth_cxr", synthetic_data.cxr_records("synth_cxr", 30, seed=0))]
