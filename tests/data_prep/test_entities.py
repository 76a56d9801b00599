"""Entity extraction (medjax.data.entities) and its agreement with the CheXpert labeler."""
import numpy as np
import pytest

from benchmarks import entity_agreement
from medjax import contract
from medjax.data_prep import entities


def _codes(text: str) -> dict[str, int]:
  return {e: int(c) for e, c in zip(contract.ENTITIES, entities.extract(text)) if c}


def test_vocabularies():
  assert contract.LABELS[:14] == contract.ENTITIES[:14] == contract.CHEXPERT
  assert contract.LABELS[14:] == ("covid19", "other_pneumonia")
  assert len(set(contract.ENTITIES)) == len(contract.ENTITIES) == 20
  out = entities.extract("")
  assert out.dtype == np.int8 and out.shape == (20,) and not out.any()


def test_agreement_with_the_chexpert_labeler_reference():
  """4 reference reports x 14 observations (labeled_reports.csv); measured: all 56 cells agree,
  F1 1.0 for present (6), negated (5) and uncertain (2). A tiny set: the IU MeSH comparison in
  test_iu_xray.py is the larger check."""
  result = entity_agreement.chexpert_agreement()
  assert result["reports"] == 4 and result["cells"] == 56
  assert result["accuracy"] >= 0.95
  assert all(result[c]["f1"] >= 0.8 for c in ("present", "negated", "uncertain"))


@pytest.mark.parametrize("text, expected", [
    ("Left pleural effusion.", {"pleural_effusion": 1}),
    ("No pneumothorax.", {"pneumothorax": -1, "no_finding": 1}),
    ("Pneumothorax is not seen.", {"pneumothorax": -1, "no_finding": 1}),
    ("Cannot exclude pneumonia.", {"pneumonia": 2}),  # uncertainty beats the negation 'cannot'
    ("Atelectasis versus consolidation.", {"atelectasis": 2, "consolidation": 2}),
    ("No evidence of focal airspace disease, pleural effusion, or pneumothorax.",
     {"lung_opacity": -1, "pleural_effusion": -1, "pneumothorax": -1, "no_finding": 1}),
    ("No change in the cardiomegaly.", {"cardiomegaly": 1}),  # NegEx pseudo-negation
    ("No edema but there is a new effusion.", {"edema": -1, "pleural_effusion": 1}),  # 'but'
    ("No pneumothorax. Small effusion.", {"pneumothorax": -1, "pleural_effusion": 1}),  # sentence
    ("Pericardial effusion.", {}),  # CheXpert unmention: not a pleural effusion
    ("History of tuberculosis; platelets low.", {}),  # 'tube', 'plate' are not devices here
    ("ET tube in place.", {"support_devices": 1}),  # devices are not findings: no 'no finding'
    ("Bilateral ground-glass opacities, likely COVID-19 viral pneumonia.",
     {"ground_glass_opacity": 1, "lung_opacity": 1, "covid19": 2, "viral_pneumonia": 2,
      "pneumonia": 2}),
    ("Colon cancer in a family.", {}),  # nothing said about the chest: not 'no finding'
    ("No acute cardiopulmonary process.", {"no_finding": 1}),
])
def test_extract(text, expected):
  assert _codes(text) == expected


def test_stronger_mention_wins():
  # present beats uncertain beats negated, over the mentions of one entity (CheXpert's rule)
  assert _codes("No effusion on the left. Possible effusion on the right.")["pleural_effusion"] == 2
  assert _codes("Possible effusion. Definite effusion on the right.")["pleural_effusion"] == 1


def test_a_licensed_vocabulary_can_replace_the_lexicon():
  """A Lexicon is entity -> phrases; e.g. UMLS synonyms of chosen CUIs."""
  base = entities.Lexicon.load()
  mentions = {e: ("c0000001 " + e.replace("_", " "),) for e in contract.ENTITIES}
  mentions["pneumonia"] = ("lung infection",)
  custom = entities.Extractor(entities.Lexicon(mentions, {}, base.triggers))
  out = dict(zip(contract.ENTITIES, custom("No lung infection. Pneumonia.").tolist()))
  assert out["pneumonia"] == -1  # 'pneumonia' is no phrase of this vocabulary
  with pytest.raises(ValueError, match="no phrases for entities"):
    entities.Extractor(entities.Lexicon({"pneumonia": ("x",)}, {}, base.triggers))


def test_lexicon_location(tmp_path, monkeypatch):
  monkeypatch.delenv("MEDJAX_LEXICON", raising=False)
  monkeypatch.setenv("MEDJAX_SHARED_DATA", str(tmp_path / "data"))  # the data dir's lexicon
  assert entities.default_lexicon_dir() == tmp_path / "data" / "lexicon"
  monkeypatch.setenv("MEDJAX_LEXICON", str(tmp_path))  # an explicit lexicon wins
  assert entities.default_lexicon_dir() == tmp_path
  with pytest.raises(FileNotFoundError, match=f"{tmp_path}.*MEDJAX_LEXICON"):
    entities.Lexicon.load()
