"""medjax/contract.py is the one home of the record schema and the batch: docs/contracts.md
states it, and every producer of a batch (the pipeline's empty rows, AOT's abstract batch, the
tests' random batches) follows a change made there."""
import re
from pathlib import Path

import numpy as np

from medjax import contract
from medjax.configs import resolve
from medjax.data.transforms import Example
from medjax.data_prep import schema
from medjax.train import aot

import batches

DOC = Path(__file__).resolve().parents[1] / "docs" / "contracts.md"


def _table_keys(section: str) -> set[str]:
  text = DOC.read_text().split(f"## {section}", 1)[1].split("\n## ", 1)[0]
  rows = [ln.split("|")[1] for ln in text.splitlines() if ln.startswith("| `")]
  return {k for row in rows for k in re.findall(r"`(\w+)`", row)}


def test_the_doc_states_the_contract():
  assert _table_keys("Record schema") == set(contract.RECORD_FIELDS)
  config = batches.config()
  assert _table_keys("Batch") == set(contract.batch_specs(config.data))
  assert f"version {contract.SCHEMA_VERSION}" in DOC.read_text()


def test_a_change_to_the_contract_reaches_every_batch(monkeypatch):
  config = batches.config()
  original = contract.batch_specs

  def changed(data_cfg):  # one field wider, one new key
    specs = dict(original(data_cfg))
    specs["mae_noise"] = ((specs["mae_noise"][0][0] + 3,), np.float32)
    specs["extra_flag"] = ((), np.bool_)
    return specs

  monkeypatch.setattr(contract, "batch_specs", changed)
  want = {k: shape for k, (shape, _) in changed(config.data).items()}
  empty = Example(config.data, tokenizer=_Tok(), train=True).empty()
  abstract = aot.abstract_batch(config)
  random = batches.random_batch(config)
  assert {k: v.shape for k, v in empty.items()} == want
  assert {k: v.shape[1:] for k, v in abstract.items()} == want
  assert {k: v.shape[1:] for k, v in random.items()} == want


def test_entities_vocabulary_sizes_the_schema_and_the_batch(monkeypatch):
  monkeypatch.setattr(contract, "ENTITIES", contract.ENTITIES + ("extra",))
  config = resolve.resolved(batches.config())
  assert contract.batch_specs(config.data)["text_entities"][0] == (len(contract.ENTITIES),)
  assert Example(config.data, tokenizer=_Tok(), train=True).empty()["image_entities"].shape == (
      len(contract.ENTITIES),)


def test_schema_features_are_the_contract_fields():
  assert set(schema.features().keys()) == set(contract.RECORD_FIELDS)


class _Tok:
  """Enough of a tokenizer for Example's empty rows (no text is encoded)."""
  pad_id, bos_id, eos_id, mask_id, unk_id, vocab_size = 0, 2, 3, 4, 1, 64
