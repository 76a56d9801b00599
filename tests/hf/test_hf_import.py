"""HF import (init_from=hf:DIR): ViTModel, Dinov2Model and BertModel towers, random and real
pretrained, give transformers' outputs in medjax; what does not fit is refused by name."""
import jax
import numpy as np
import pytest
from flax import nnx
from hf_support import HF_MISSING, random_params
from safetensors.numpy import load_file, save_file

from medjax import sharding
from medjax.contract import study_text
from medjax.data import mixture
from medjax.models import vit
from medjax.train import state as state_lib, weights

import batches

torch = pytest.importorskip("torch", reason=HF_MISSING)
transformers = pytest.importorskip("transformers", reason=HF_MISSING)
from medjax.hf import convert, names  # noqa: E402
from medjax.hf.tokenizer import HfTokenizer  # noqa: E402

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
TOWER = dict(width=32, depth=2, heads=2, mlp_dim=64)


def _saved(hf_config, path):
  """A transformers model of `hf_config` with random weights (moved off the init's round
  values), saved to `path`."""
  torch.manual_seed(0)
  model = transformers.AutoModel.from_config(hf_config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(path)
  return model


def _imported(cfg, init_from: str, mesh=None):
  """(medjax model, its params, the params before) after `init_from` replaced its towers."""
  ts = state_lib.setup(cfg, mesh or sharding.make_mesh(dict(data=1), jax.devices()[:1]))
  start = random_params(ts.abstract_state["params"])
  params = weights.load_params(init_from, ts.abstract_state["params"], ts.logical_specs,
                                  config=cfg, params=start)
  return nnx.merge(ts.graphdef, params), params, start


def _image_config(image_size, patch_size, **image):
  return batches.config(image_size=image_size, patch_size=patch_size, channels=1,
                        image=dict(TOWER, class_token=True, positions="learned", mlp_act="gelu",
                                   **image))


@pytest.mark.parametrize("kind", ["vit", "dinov2"])
def test_image_towers_match_transformers(kind, tmp_path):
  if kind == "vit":  # at its own resolution
    hf_config = transformers.ViTConfig(image_size=32, patch_size=8, **SMALL)
    cfg, size = _image_config(32, 8, norm_eps=1e-12), 32
  else:  # RAD-DINO's architecture at another resolution: 2 x 2 patches trained, 3 x 3 used
    hf_config = transformers.Dinov2Config(image_size=28, patch_size=14, mlp_ratio=2, **{
        k: v for k, v in SMALL.items() if k != "intermediate_size"})
    cfg, size = _image_config(42, 14, layer_scale=1.0), 42
  hf_model = _saved(hf_config, tmp_path)
  mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))  # placed as training places them
  model, params, start = _imported(cfg, f"hf:{tmp_path}", mesh)
  jax.tree.map(np.testing.assert_array_equal, params["text"], start["text"])  # untouched
  mlp_up = params["image"]["blocks"]["layers"]["mlp"]["up"]["kernel"]
  assert mlp_up.sharding.shard_shape(mlp_up.shape) == (2, 16, 32)  # [layers, embed/2, mlp/2]

  images = np.random.default_rng(1).normal(size=(2, size, size, 1)).astype(np.float32)
  tokens, pooled = nnx.jit(lambda m, x: m.encode_image(x))(model, images)
  with torch.no_grad():  # a grayscale image as RGB, what the summed 1-channel stem sees
    states = hf_model(pixel_values=torch.from_numpy(np.repeat(images, 3, -1).transpose(
        0, 3, 1, 2))).last_hidden_state.numpy()
  np.testing.assert_allclose(np.asarray(pooled), states[:, 0], atol=1e-4)  # the class state
  np.testing.assert_allclose(np.asarray(tokens), states[:, 1:], atol=1e-4)


def test_position_tables_resize_as_pytorch_bicubic():
  table = np.random.default_rng(0).normal(size=(5, 5, 3)).astype(np.float32)
  for new in (3, 5, 8, 16):
    ours = np.asarray(vit.resize_positions(table.reshape(25, 3), (5, 5), (new, new)))
    theirs = torch.nn.functional.interpolate(
        torch.from_numpy(table).permute(2, 0, 1)[None], size=(new, new), mode="bicubic",
        align_corners=False)[0].permute(1, 2, 0).reshape(new * new, 3).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def _text_config(vocab, max_len, tokenizer, **text):
  cfg = batches.config(vocab=vocab, text_len=min(max_len, 64), decoder=dict(max_len=64),
                       text=dict(norm="post", norm_eps=1e-12, mlp_act="gelu", max_len=max_len,
                                 **text))
  cfg.data.tokenizer = f"hf:{tokenizer}"
  return cfg


def test_random_bert_matches_transformers(tmp_path, minilm_dir):
  hf_model = _saved(transformers.BertConfig(vocab_size=64, max_position_embeddings=16, **SMALL),
                    tmp_path)
  model, *_ = _imported(_text_config(64, 16, minilm_dir, **TOWER), f"hf:{tmp_path}")
  rng = np.random.default_rng(2)
  ids = rng.integers(5, 64, (3, 16)).astype(np.int32)
  mask = np.arange(16)[None] < np.array([[16], [9], [3]])
  states, pooled = model.encode_text(ids, mask)
  with torch.no_grad():
    theirs = hf_model(input_ids=torch.from_numpy(ids).long(),
                      attention_mask=torch.from_numpy(mask).long()).last_hidden_state.numpy()
  np.testing.assert_allclose(np.asarray(states), theirs, atol=1e-4)
  np.testing.assert_allclose(np.asarray(pooled), theirs[:, 0], atol=1e-4)


def test_real_pretrained_bert_and_its_tokenizer_on_real_notes(minilm_dir, covid_data_dir):
  cfg = _text_config(30522, 512, minilm_dir, width=384, depth=6, heads=12, mlp_dim=1536)
  cfg.data.dir = str(covid_data_dir)
  (source,) = mixture.open_sources(cfg.data, "validation")
  notes = [t for t in (study_text(source.records[i]) for i in range(40)) if t][:8]
  tok = HfTokenizer(str(minilm_dir))
  rows = [tok.encode(note, 64) for note in notes]
  ids, mask = (np.stack(x) for x in zip(*rows))
  reference = transformers.AutoTokenizer.from_pretrained(minilm_dir)(
      notes, max_length=64, truncation=True, padding="max_length", return_tensors="np")
  np.testing.assert_array_equal(ids, reference["input_ids"])  # [CLS] ... [SEP] [PAD]...
  np.testing.assert_array_equal(mask, reference["attention_mask"])

  model, *_ = _imported(cfg, f"hf:{minilm_dir}")
  states, _ = nnx.jit(lambda m, i, k: m.encode_text(i, k))(model, ids, mask)
  hf_model = transformers.AutoModel.from_pretrained(minilm_dir).eval()
  with torch.no_grad():
    theirs = hf_model(input_ids=torch.from_numpy(ids).long(),
                      attention_mask=torch.from_numpy(mask).long()).last_hidden_state.numpy()
  np.testing.assert_allclose(np.asarray(states), theirs, atol=1e-4)


def test_a_config_that_does_not_describe_the_tower_is_refused_with_the_fix(tmp_path, minilm_dir):
  _saved(transformers.BertConfig(vocab_size=64, max_position_embeddings=16, **SMALL), tmp_path)
  cfg = _text_config(64, 16, minilm_dir, **dict(TOWER, width=48, heads=2))
  cfg.model.text.norm = "pre"
  with pytest.raises(ValueError) as e:
    _imported(cfg, f"hf:{tmp_path}")
  assert "--config.model.text.width=32" in str(e.value)
  assert "--config.model.text.norm=post" in str(e.value)
  cfg = _text_config(64, 16, minilm_dir, **TOWER)
  cfg.data.tokenizer = ""  # medjax's sentencepiece ids would index BERT's WordPiece rows
  with pytest.raises(ValueError, match=f"--config.data.tokenizer=hf:{tmp_path}"):
    _imported(cfg, f"hf:{tmp_path}")


def test_a_checkpoint_without_a_tensor_is_refused_naming_it(tmp_path):
  _saved(transformers.ViTConfig(image_size=32, patch_size=8, **SMALL), tmp_path)
  weights = load_file(tmp_path / "model.safetensors")
  del weights["layernorm.weight"]
  save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
  with pytest.raises(ValueError, match="layernorm.weight"):
    _imported(_image_config(32, 8, norm_eps=1e-12), f"hf:{tmp_path}")


def test_tensors_that_do_not_fit_the_table_are_named():
  depth, arch = 1, names.VIT
  rows = convert.rows(arch, depth)
  state = {h: np.zeros(1, np.float32) for _, h, _ in rows}
  expected = {m: (1,) for m, _, _ in rows if m not in ("cls", "positions", "stem.kernel")}
  state["encoder.extra.weight"] = np.zeros(1, np.float32)
  expected["blocks.layers.0.scale_attn"] = (32,)
  with pytest.raises(ValueError) as e:
    convert.tower_from_hf(arch, state, expected, depth, "test")
  message = str(e.value)
  assert "encoder.extra.weight is not used" in message
  assert "blocks.layers.0.scale_attn has no HF counterpart" in message
  assert "has no medjax param cls" in message
