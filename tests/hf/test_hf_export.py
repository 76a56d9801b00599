"""HF export: transformers loads the directories, and the model card's lines give medjax's
pixels, ids, pooled and projected embeddings on real X-rays and notes."""
import io
import re

import jax
import numpy as np
import pytest
from flax import nnx
from hf_support import HF_MISSING, random_params
from PIL import Image

from medjax import sharding
from medjax.configs import resolve
from medjax.contract import study_text
from medjax.data import mixture, pipeline
from medjax.data.transforms import Example, pick_view
from medjax.models import vit
from medjax.train import state as state_lib, weights

import batches

torch = pytest.importorskip("torch", reason=HF_MISSING)
transformers = pytest.importorskip("transformers", reason=HF_MISSING)
from medjax.hf import card, export as hf_export  # noqa: E402

TEXT_LEN = 48  # shorter than most notes: the truncation of both tokenizers is compared too


def _config(covid_data_dir, image=(), text=()):
  cfg = batches.config(image_size=64, patch_size=16, vocab=1000, text_len=TEXT_LEN,
                       image=dict(image), text=dict(text, max_len=TEXT_LEN),
                       decoder=dict(max_len=TEXT_LEN))
  cfg.data.dir = str(covid_data_dir)
  return cfg


@pytest.fixture(scope="module")
def exported(covid_data_dir, tmp_path_factory):
  cfg = _config(covid_data_dir)
  ts = state_lib.setup(cfg, sharding.make_mesh(dict(data=1), jax.devices()[:1]))
  params = random_params(ts.abstract_state["params"])
  out = tmp_path_factory.mktemp("hf_export")
  classes = hf_export.export(cfg, params, ts.logical_specs,
                             str(pipeline.tokenizer_path(cfg.data)), out)
  return cfg, ts, params, out, classes


def _studies(cfg, count: int):
  """The first validation studies with an image and text: (record, PNG bytes of its view)."""
  (source,) = mixture.open_sources(cfg.data, "validation")
  out = []
  for i in range(len(source.records)):
    record = source.records[i]
    if len(record["images"]) and study_text(record):
      out.append((record, record["images"][pick_view(record["views"], None)]))
    if len(out) == count:
      return out
  raise AssertionError("too few validation studies with image and text")


def test_directories_load_with_automodel_and_nothing_missing(exported):
  *_, out, classes = exported
  assert classes == dict(image="SiglipVisionModel", text="MegatronBertModel")
  for sub, name in (("image_encoder", "SiglipVisionModel"), ("text_encoder", "MegatronBertModel")):
    model, info = transformers.AutoModel.from_pretrained(out / sub, output_loading_info=True)
    assert type(model).__name__ == name
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
  card = (out / "README.md").read_text()
  assert "not for clinical use" in card.lower() and "CC BY-NC-SA" in card
  # Random params, no run: the card claims no figure.
  assert "claims no figure" in card and "| evaluator |" not in card


def test_model_card_reports_the_runs_evaluations(exported):
  cfg, *_, classes = exported
  run = {"probe/auroc": (0, 0.606, 700, 0.495), "val/mlm/loss": (350, 7.9, 400, 6.4)}
  text = card.model_card(resolve.resolved(cfg), classes, "last_hidden_state", run)
  assert "| `probe/auroc` | 0.6060 (step 0) | 0.4950 (step 700) |" in text
  assert "| `val/mlm/loss` | 7.9000 (step 350) | 6.4000 (step 400) |" in text
  assert "these figures say the run trained as configured" in text
  assert "claims no figure" not in text


def test_model_card_lines_give_medjax_embeddings_on_real_studies(exported, tmp_path):
  cfg, ts, params, out, _ = exported
  studies = _studies(cfg, 6)
  example = Example(cfg.data, pipeline.load_tokenizer(cfg.data), train=False)
  rows = [example.row(("covid_cxr", record), np.random.default_rng(0)) for record, _ in studies]
  batch = {k: np.stack([r[k] for r in rows]) for k in ("image", "text_ids", "text_mask")}
  assert batch["text_mask"][:, -1].any(), "some notes must be cut at TEXT_LEN"

  model = nnx.merge(ts.graphdef, jax.tree.map(jax.numpy.asarray, params))
  _, pooled_image = model.encode_image(batch["image"])
  _, pooled_text = model.encode_text(batch["text_ids"], batch["text_mask"])
  image_emb, text_emb = model.embed_image(pooled_image), model.embed_text(pooled_text)
  logits = np.exp(float(params["logit_scale"])) * np.asarray(image_emb @ text_emb.T)

  # The card's own code block, on these images and notes.
  files = []
  for i, (_, png) in enumerate(studies):
    files.append(str(tmp_path / f"{i}.png"))
    Image.open(io.BytesIO(png)).save(files[-1])
  code = re.search(r"```python\n(.*?)```", (out / "README.md").read_text(), re.S).group(1)
  for placeholder, value in ((card.EXAMPLE_ROOT, str(out)), ('["cxr.png"]', repr(files)),
                             ('["No acute cardiopulmonary process."]',
                              repr([study_text(r) for r, _ in studies]))):
    assert placeholder in code
    code = code.replace(placeholder, value)
  hf = {}
  exec(compile(code, "README.md", "exec"), hf)

  np.testing.assert_allclose(hf["x"].numpy(), batch["image"].transpose(0, 3, 1, 2), atol=1e-5)
  np.testing.assert_array_equal(hf["text"]["input_ids"].numpy(), batch["text_ids"])
  np.testing.assert_array_equal(hf["text"]["attention_mask"].numpy(), batch["text_mask"])
  for name, ours in (("pooled_image", pooled_image), ("pooled_text", pooled_text),
                     ("image_emb", image_emb), ("text_emb", text_emb), ("logits", logits)):
    np.testing.assert_allclose(hf[name].numpy(), np.asarray(ours), atol=1e-4, err_msg=name)


def test_the_exported_towers_import_back_into_medjax(exported):
  cfg, ts, params, out, _ = exported
  cfg = cfg.copy_and_resolve_references()
  cfg.model.image.positions = "learned"  # SigLIP's table holds the sin-cos code
  cfg.data.tokenizer = str(out / "text_encoder" / "tokenizer.model")
  back = state_lib.setup(cfg, sharding.make_mesh(dict(data=1), jax.devices()[:1]))
  start = random_params(back.abstract_state["params"], seed=2)
  loaded = weights.load_params(f"hf:{out}/image_encoder,hf:{out}/text_encoder",
                                  back.abstract_state["params"], back.logical_specs,
                                  config=cfg, params=start)
  image = dict(loaded["image"])
  grid = cfg.model.image.image_size // cfg.model.image.patch_size
  np.testing.assert_allclose(image.pop("positions"), vit.sincos_2d(grid, grid, 32), atol=1e-6)
  for tower, ours in (("image", image), ("text", loaded["text"])):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), ours,
                 params[tower])
  jax.tree.map(np.testing.assert_array_equal, loaded["image_head"], start["image_head"])


def test_class_token_and_post_ln_towers_export_as_dinov2_and_bert(covid_data_dir, tmp_path):
  cfg = _config(covid_data_dir, image=dict(class_token=True, positions="learned",
                                           layer_scale=0.5, mlp_act="gelu"),
                text=dict(norm="post", norm_eps=1e-12))
  ts = state_lib.setup(cfg, sharding.make_mesh(dict(data=1), jax.devices()[:1]))
  params = random_params(ts.abstract_state["params"], seed=1)
  classes = hf_export.export(cfg, params, ts.logical_specs,
                             str(pipeline.tokenizer_path(cfg.data)), tmp_path)
  assert classes == dict(image="Dinov2Model", text="BertModel")
  for sub in ("image_encoder", "text_encoder"):
    _, info = transformers.AutoModel.from_pretrained(tmp_path / sub, output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
  model = nnx.merge(ts.graphdef, jax.tree.map(jax.numpy.asarray, params))
  gaps = hf_export.round_trip_gaps(tmp_path, model, cfg, batch=3)
  assert max(gaps.values()) < 1e-4, gaps
  assert "image_tower(pixel_values=x).pooler_output" in (tmp_path / "README.md").read_text()


def test_towers_the_export_cannot_hold_are_refused_naming_the_field(covid_data_dir):
  cfg = _config(covid_data_dir, image=dict(layer_scale=0.1))  # LayerScale, no class token
  with pytest.raises(ValueError, match="model.image.layer_scale"):
    hf_export.check_exportable(cfg)
