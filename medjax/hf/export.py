"""`medjax-export --format hf`: a trained medjax model as Hugging Face transformers directories.

  <out>/image_encoder/   SiglipVisionModel (vision_use_head=False: no class token, the sin-cos
                         positions as its table), or Dinov2Model for a tower with a class
                         token: config.json, model.safetensors, preprocessor_config.json
  <out>/text_encoder/    MegatronBertModel (medjax's pre-LN encoder; BertModel for a post-LN one)
                         with the run's tokenizer (medjax's sentencepiece model behind
                         SentencePieceBackend, giving medjax's ids; or the run's HF tokenizer)
  <out>/projections.safetensors  the heads into the shared spaces and the temperature
  <out>/README.md        model card: data and licences, intended use, limitations, the lines
                         that reproduce medjax's pooled and projected embeddings
Each directory loads with `transformers.AutoModel.from_pretrained(dir)`, no missing or unexpected
tensors, and gives medjax's token states: pooled image = mean of last_hidden_state over the
patches (SigLIP) or the class state, pooler_output (DINOv2); pooled text = last_hidden_state[:, 0]
(the text pooler's dense + tanh is not medjax's: it is exported as identity to complete the
class). Dropout is 0, as medjax trains.
"""
from __future__ import annotations

import json
import math

import numpy as np
import safetensors.numpy

from medjax import hf, named_params, paths
from medjax.configs import resolve
from medjax.hf import card, convert, names, tokenizer
from medjax.models import vit

IMAGE_DIR, TEXT_DIR, PROJECTIONS = "image_encoder", "text_encoder", "projections.safetensors"
# Exported image class -> (how the model card pools its output, the same as a function).
POOL_IMAGE = {
    "SiglipVisionModel": ("last_hidden_state.mean(dim=1)",
                          lambda out: out.last_hidden_state.mean(dim=1)),
    "Dinov2Model": ("pooler_output", lambda out: out.pooler_output),  # final class state
}
# medjax head -> the name of its [proj_dim, width] weight in projections.safetensors.
HEADS = {"image_head": "image_projection.weight", "text_head": "text_projection.weight",
         "view_head": "view_projection.weight", "section_head": "section_projection.weight"}


def _safetensors(tensors: dict, target) -> None:
  """float32 tensors as a safetensors file transformers loads (format "pt"); scalars stay 0-d."""
  contiguous = lambda v: np.ascontiguousarray(v, np.float32) if np.ndim(v) else np.asarray(
      v, np.float32)
  data = safetensors.numpy.save({k: contiguous(v) for k, v in tensors.items()},
                                metadata={"format": "pt"})
  paths.write_atomic(target, data)


def _hf_config(arch: names.Arch, tower_cfg, transformers_config_class, **extra):
  """The HF config of a medjax tower, from the table's field <-> attribute pairs (`extra`
  gives the derived ones and overrides)."""
  kwargs = {attr: tower_cfg[field] for field, attr in arch.config.items()
            if not isinstance(attr, names.Derived)}
  kwargs["hidden_act"] = names.EXPORT_ACTS[tower_cfg.mlp_act]
  return transformers_config_class(**{**kwargs, **arch.requires, **extra})


def _tensors(arch: names.Arch, named: dict, depth: int, patch_size: int) -> dict:
  """HF tensors of the table's rows but the class token's (DINOv2's: by the caller)."""
  return {h: convert.to_hf(kind, named[m], patch_size)
          for m, h, kind in convert.rows(arch, depth) if kind != "class"}


def _write_model(out_dir, hf_config, class_name: str, tensors: dict) -> None:
  out_dir.mkdir(parents=True, exist_ok=True)
  hf_config.architectures = [class_name]
  paths.write_atomic(out_dir / "config.json", hf_config.to_json_string())
  _safetensors(tensors, out_dir / "model.safetensors")


def check_exportable(config) -> None:
  """Raises naming the field if the image tower has what neither HF class can hold."""
  im = config.model.image
  if im.layer_scale and not im.class_token:
    raise ValueError(f"config.model.image.layer_scale = {im.layer_scale!r} without a class "
                     "token: SiglipVisionModel has no LayerScale (Dinov2Model, the export of "
                     "class-token towers, has); use the medjax export format")
  if im.class_token and im.mlp_dim % im.width:
    raise ValueError(f"config.model.image.mlp_dim = {im.mlp_dim}: Dinov2Model (the export of "
                     f"class-token towers) needs a whole multiple of the width {im.width}")


def _image(config, named: dict, out_dir, transformers) -> str:
  """SiglipVisionModel, or Dinov2Model for a tower with a class token."""
  im, d = config.model.image, config.data
  grid = im.image_size // im.patch_size
  if im.positions == "sincos":  # what the tower adds at its configured size
    named = {**named, "positions": vit.sincos_2d(grid, grid, im.width)}
  if im.class_token:
    name, arch = "Dinov2Model", names.DINOV2
    ones = np.ones(im.width, np.float32)  # Dinov2Model always has LayerScale: 1 = none
    named = {**{f"blocks.layers.{i}.{m}": ones for i in range(im.depth)
                for m in ("scale_attn", "scale_mlp")}, **named}
    tensors = _tensors(arch, named, im.depth, im.patch_size)
    # Its class slot of the position table is 0: medjax's class token holds its position.
    tensors["embeddings.cls_token"] = named["cls"].reshape(1, 1, -1)
    tensors["embeddings.position_embeddings"] = np.concatenate(
        [np.zeros((1, im.width), np.float32), named["positions"]])[None]
    tensors["embeddings.mask_token"] = np.zeros((1, im.width), np.float32)  # unused
    hf_config = _hf_config(arch, im, transformers.Dinov2Config, image_size=im.image_size,
                           mlp_ratio=im.mlp_dim // im.width, num_channels=im.channels,
                           layerscale_value=im.layer_scale or 1.0,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  else:
    name, arch = "SiglipVisionModel", names.SIGLIP
    tensors = _tensors(arch, named, im.depth, im.patch_size)
    hf_config = _hf_config(arch, im, transformers.SiglipVisionConfig, image_size=im.image_size,
                           attention_dropout=0.0)
  _write_model(out_dir, hf_config, name, tensors)
  per_image = d.normalize == "per_image"
  processor = dict(
      image_processor_type="SiglipImageProcessorPil", do_resize=True,
      size=dict(height=im.image_size, width=im.image_size), resample=2,  # PIL bilinear
      do_rescale=True, rescale_factor=1 / 255, do_convert_rgb=False,
      # per_image normalisation (medjax's default) is not an image-processor option: the model
      # card gives the line that applies it to pixel_values.
      do_normalize=not per_image, image_mean=[d.mean] * im.channels,
      image_std=[d.std] * im.channels)
  paths.write_atomic(out_dir / "preprocessor_config.json", json.dumps(processor, indent=2))
  return name


def _text(config, named: dict, tokenizer_spec: str, out_dir, transformers) -> str:
  tx = config.model.text
  arch, name, config_class = ((names.BERT, "BertModel", transformers.BertConfig)
                              if tx.norm == "post" else
                              (names.MEGATRON_BERT, "MegatronBertModel",
                               transformers.MegatronBertConfig))
  hf_config = _hf_config(arch, tx, config_class, type_vocab_size=2, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)
  tensors = _tensors(arch, named, tx.depth, 0)
  # Single-segment input: a zero type table keeps medjax's positions as they are.
  tensors["embeddings.token_type_embeddings.weight"] = np.zeros((2, tx.width), np.float32)
  tensors["pooler.dense.weight"] = np.eye(tx.width, dtype=np.float32)
  tensors["pooler.dense.bias"] = np.zeros(tx.width, np.float32)
  _write_model(out_dir, hf_config, name, tensors)
  if tokenizer_spec.startswith(resolve.HF_PREFIX):
    tokenizer.save_hf_tokenizer(tokenizer_spec[len(resolve.HF_PREFIX):], str(out_dir))
  else:
    tokenizer.save_sentencepiece(tokenizer_spec, out_dir, tx.max_len)
  return name


def _projections(config, params) -> dict:
  """The heads as torch Linear weights, and the image-text logit scale (log space, as CLIP)
  and bias (SigLIP; 0 for the CLIP loss) that the training loss used."""
  out = {hf_name: np.asarray(params[head]["kernel"]).T for head, hf_name in HEADS.items()}
  it = config.objectives.image_text
  scale = 1.0 / it.tau if it.tau > 0 else math.exp(float(params["logit_scale"]))
  if it.kind == "clip":
    scale = min(scale, 100.0)  # the CLIP loss caps the learned temperature
  out["logit_scale"] = np.float32(math.log(scale))
  out["logit_bias"] = np.float32(float(params["logit_bias"]) if it.kind == "siglip" else 0.0)
  return out


def export(config, params, logical_specs, tokenizer_spec: str, out_dir,
           evaluations: dict | None = None) -> dict:
  """Writes the directories of the module docstring for `params` (nested, as the checkpoint)
  trained with `config` and tokenizer `tokenizer_spec` (a sentencepiece file or hf:DIR); the
  card reports `evaluations` (`summary.evaluations` of the run). Returns {"image": class name,
  "text": class name}."""
  (transformers,) = hf.require("transformers")
  config = resolve.resolved(config)
  check_exportable(config)
  out = paths.path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  named = {t: named_params.to_named(params[t], logical_specs[t]) for t in ("image", "text")}
  classes = dict(image=_image(config, named["image"], out / IMAGE_DIR, transformers),
                 text=_text(config, named["text"], tokenizer_spec, out / TEXT_DIR,
                            transformers))
  _safetensors(_projections(config, params), out / PROJECTIONS)
  paths.write_atomic(out / "README.md", card.model_card(
      config, classes, POOL_IMAGE[classes["image"]][0], evaluations))
  return classes


def round_trip_gaps(out_dir, model, config, batch: int = 2, seed: int = 0) -> dict[str, float]:
  """Max abs difference between the pooled features of the exported towers (loaded with
  transformers, pooled as the model card says) and `model`'s, on random inputs."""
  torch, transformers = hf.require("torch", "transformers")
  out, rng = paths.path(out_dir), np.random.default_rng(seed)
  im, t = config.model.image, config.data.text_len
  images = rng.normal(size=(batch, im.image_size, im.image_size, im.channels)).astype(np.float32)
  ids = rng.integers(0, config.model.text.vocab_size, (batch, t), dtype=np.int32)
  mask = np.arange(t)[None, :] < rng.integers(2, t + 1, (batch, 1))  # padded rows too
  towers = {sub: transformers.AutoModel.from_pretrained(str(out / sub)).eval()
            for sub in (IMAGE_DIR, TEXT_DIR)}
  pool = POOL_IMAGE[type(towers[IMAGE_DIR]).__name__][1]
  with torch.no_grad():
    theirs = dict(
        image=pool(towers[IMAGE_DIR](pixel_values=torch.from_numpy(
            images.transpose(0, 3, 1, 2)))).numpy(),
        text=towers[TEXT_DIR](input_ids=torch.from_numpy(ids).long(),
                              attention_mask=torch.from_numpy(mask).long())
        .last_hidden_state[:, 0].numpy())
  ours = dict(image=model.encode_image(images)[1], text=model.encode_text(ids, mask)[1])
  return {k: float(np.abs(np.asarray(ours[k]) - theirs[k]).max()) for k in ours}
