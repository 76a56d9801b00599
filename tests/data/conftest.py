"""Fixtures of synthetic in-memory sources and a tokenizer trained on their text."""
import pytest

import synthetic_data
from data_prep import tokenizer as tokenizer_prep
from medjax.data.mixture import Source
from medjax.data.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def synth_tokenizer() -> Tokenizer:
  return Tokenizer(tokenizer_prep.train_model(list(synthetic_data.PHRASES) * 3, vocab_size=120))


@pytest.fixture
def synth_sources():
  return [Source("synth_cxr", synthetic_data.cxr_records("synth_cxr", 30, seed=0))]


@pytest.fixture(scope="session")
def real_data_dir(shared_data, tmp_path_factory):
  """TFDS data_dir with covid_cxr (images + notes) and ncbi_disease (text-only abstracts)
  prepared from the real sample, and a small tokenizer trained on both."""
  from data_prep import covid_cxr, ncbi_disease
  out = tmp_path_factory.mktemp("tfds_mixed")
  covid_cxr.prepare(shared_data / "covid-chestxray", out)
  ncbi_disease.prepare(shared_data / "text" / "ncbi_disease", out)
  tokenizer_prep.train_tokenizer(out, names=["covid_cxr", "ncbi_disease"], vocab_size=1000)
  return out
