"""data.tokenizer=hf:DIR: a Hugging Face WordPiece tokenizer behind the pipeline's Tokenizer
interface, in the pipeline and in Grain workers (pickled)."""
import pickle

import numpy as np
import pytest
from hf_support import HF_MISSING

from medjax.data import mixture, pipeline
from medjax.data.transforms import Example

transformers = pytest.importorskip("transformers", reason=HF_MISSING)
from medjax.hf.tokenizer import HfTokenizer  # noqa: E402

NOTE = "Bilateral patchy opacities, worse on the left; no pleural effusion."


@pytest.fixture(scope="module")
def tok(minilm_dir):
  return HfTokenizer(str(minilm_dir))


def test_bert_special_tokens_take_the_medjax_roles(tok, minilm_dir):
  reference = transformers.AutoTokenizer.from_pretrained(minilm_dir)
  assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.mask_id, tok.unk_id) == tuple(
      reference.convert_tokens_to_ids(["[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"]))
  assert tok.vocab_size == len(reference) == 30522
  ids, mask = tok.encode("", 4)
  assert ids.tolist() == [tok.bos_id, tok.eos_id, tok.pad_id, tok.pad_id]
  assert mask.tolist() == [True, True, False, False]
  ids, _ = tok.encode(NOTE, 64)
  assert tok.decode(ids) == reference.decode(reference(NOTE)["input_ids"],
                                             skip_special_tokens=True)


def test_pickles_for_grain_workers_with_the_same_ids_and_fingerprint(tok, minilm_dir):
  again = pickle.loads(pickle.dumps(tok))
  np.testing.assert_array_equal(again.encode(NOTE, 16)[0], tok.encode(NOTE, 16)[0])
  assert again.sha256 == tok.sha256 == HfTokenizer(str(minilm_dir)).sha256
  assert (again.mask_id, again.vocab_size) == (tok.mask_id, tok.vocab_size)


def test_the_pipeline_tokenizes_real_studies_with_it(minilm_dir, covid_data_dir):
  import batches
  cfg = batches.config(text_len=32, text=dict(max_len=32), decoder=dict(max_len=32))
  cfg.data.dir, cfg.data.tokenizer = str(covid_data_dir), f"hf:{minilm_dir}"
  tok = pipeline.load_tokenizer(cfg.data)
  assert isinstance(tok, HfTokenizer)
  (source,) = mixture.open_sources(cfg.data, "validation")
  example = Example(cfg.data, tok, train=True)
  row = example.row(("covid_cxr", source.records[0]), np.random.default_rng(0))
  assert row["text_ids"][0] == tok.bos_id and row["has_text"]
  n = int(row["text_mask"].sum())
  assert row["text_ids"][n - 1] == tok.eos_id and (row["text_ids"][n:] == tok.pad_id).all()
  masked = row["mlm_weights"] > 0
  assert masked.any() and (row["mlm_targets"][masked] == row["text_ids"][masked]).all()
  assert tok.mask_id in row["mlm_ids"][masked]  # 80% of the chosen tokens become [MASK]
