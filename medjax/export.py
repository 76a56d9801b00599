"""A trained model for people who do not run medjax: safetensors weights + serialized encoders.

An export directory holds
  model.safetensors  every param, named by its path ("image.blocks.layers.3.mlp.up.kernel"):
                     the scanned towers' stacked blocks are split into one tensor per layer, the
                     layout PyTorch/Hugging Face checkpoints use. Kernels stay in JAX layout,
                     inputs first ([in, out]; attention [embed, heads, head_dim]), so a
                     torch.nn.Linear takes the transpose. No pickle anywhere.
  config.json        the model config and the preprocessing a caller must repeat (image size,
                     pixel normalisation, channels, text length, tokenizer file, how ids are
                     built).
  tokenizer.model    the sentencepiece model of the run.
  image_encoder.jax  jax.export (StableHLO): (weights, images [b, S, S, C] float32, normalised)
                     -> unit image embeddings [b, proj_dim] float32, any batch size b.
  text_encoder.jax   (weights, ids [b, T] int32, mask [b, T] bool) -> unit text embeddings.
  report_generator.jax  (weights, images [b, S, S, C] float32) -> greedy report ids [b, T]
                     int32: BOS first, padding after EOS (decode them with tokenizer.model);
                     only for a model with a decoder.
`weights` is the dict model.safetensors loads to, so serving needs jax (and safetensors), not
medjax or flax: `jax.export.deserialize(blob).call(weights, images)`.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import nnx

from medjax import paths
from medjax.configs import resolve
from medjax.data.tokenizer import Tokenizer
from medjax.models import decoding
from medjax.named_params import from_named, to_named

SERVING = ("image_encoder", "text_encoder", "report_generator")
# Backends the serialized encoders are lowered for; lowering needs none of the hardware.
PLATFORMS = ("cpu", "cuda", "tpu")


def _serving(graphdef, abstract_params, logical_specs, generator: dict | None) -> dict:
  """The serving functions, taking the named weights: name -> fn(weights, *inputs). The report
  generator (with `generator`: its length, vocab and bos/eos/pad ids) decodes greedily."""
  def params(named):
    return from_named(named, abstract_params, logical_specs)

  def model(named):
    return nnx.merge(graphdef, params(named))

  def image_encoder(named, images):
    m = model(named)
    return m.embed_image(m.encode_image(images)[1])

  def text_encoder(named, ids, mask):
    m = model(named)
    return m.embed_text(m.encode_text(ids, mask)[1])

  fns = dict(image_encoder=image_encoder, text_encoder=text_encoder)
  if generator:
    fns["report_generator"] = lambda named, images: decoding.greedy_reports(
        graphdef, params(named), images, **generator)
  return fns


def export(config, graphdef, params, logical_specs, tokenizer_path: str, out_dir: str) -> dict:
  """Writes the export directory (see the module docstring); returns its config.json dict."""
  config = resolve.resolved(config)
  out_dir = paths.path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  named = to_named(params, logical_specs)
  blob = safetensors.numpy.save(named, metadata={"format": "medjax"})
  (out_dir / "model.safetensors").write_bytes(blob)
  (out_dir / "tokenizer.model").write_bytes(paths.path(tokenizer_path).read_bytes())
  d, im = config.data, config.model.image
  tokenizer = Tokenizer(tokenizer_path)
  generator = (dict(length=int(d.text_len), vocab=tokenizer.vocab_size, bos=tokenizer.bos_id,
                    eos=tokenizer.eos_id, pad=tokenizer.pad_id)
               if config.model.decoder.depth else None)
  spec = dict(
      model=config.model.to_dict(),
      preprocess=dict(image_size=int(d.image_size), channels=int(d.channels),
                      mean=float(d.mean), std=float(d.std), normalize=str(d.normalize),
                      text_len=int(d.text_len), tokenizer="tokenizer.model",
                      image="grayscale, resized to image_size x image_size (bilinear), /255, "
                            "then (x - mean) / std if normalize is 'dataset', or each image "
                            "(x - x.mean()) / max(x.std(), 1e-3) if 'per_image'; "
                            "layout [b, S, S, C]",
                      text="ids: the tokenizer's bos id, its pieces, its eos id, cut to "
                           "text_len with eos kept last, padded with its pad id; mask: the "
                           "non-pad positions"),
      weights="kernels [in..., out...] (JAX); scanned blocks: <tower>.blocks.layers.<i>.<param>",
      report_generator=generator)
  (out_dir / "config.json").write_text(json.dumps(spec, indent=2))

  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  weights = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in named.items()}
  b = jax.export.symbolic_shape("b")[0]
  size, t = int(d.image_size), int(d.text_len)
  inputs = dict(
      image_encoder=(jax.ShapeDtypeStruct((b, size, size, int(im.channels)), jnp.float32),),
      text_encoder=(jax.ShapeDtypeStruct((b, t), jnp.int32), jax.ShapeDtypeStruct((b, t), bool)))
  inputs["report_generator"] = inputs["image_encoder"]
  for name, fn in _serving(graphdef, abstract, logical_specs, generator).items():
    exported = jax.export.export(jax.jit(fn), platforms=PLATFORMS)(weights, *inputs[name])
    (out_dir / f"{name}.jax").write_bytes(exported.serialize())
  return spec


def load(out_dir: str) -> tuple[dict, dict, dict]:
  """(weights {name: array}, {serving function name: jax.export.Exported}, config.json dict)."""
  out_dir = paths.path(out_dir)
  weights = safetensors.numpy.load((out_dir / "model.safetensors").read_bytes())
  spec = json.loads((out_dir / "config.json").read_text())
  fns = {}
  for name in SERVING:
    if name == "report_generator" and not spec.get("report_generator"):
      continue  # a model without a decoder
    fns[name] = jax.export.deserialize((out_dir / f"{name}.jax").read_bytes())
  return weights, fns, spec


def round_trip_gaps(out_dir: str, model, batch: int = 2, seed: int = 0) -> dict[str, float]:
  """Max abs difference between each reloaded encoder and `model` on random inputs; for the
  report generator, the number of its tokens that differ from medjax's greedy decoding."""
  weights, fns, spec = load(out_dir)
  pre, rng = spec["preprocess"], np.random.default_rng(seed)
  size, t = pre["image_size"], pre["text_len"]
  images = rng.normal(size=(batch, size, size, pre["channels"])).astype(np.float32)
  ids = rng.integers(0, spec["model"]["text"]["vocab_size"], (batch, t), dtype=np.int32)
  mask = np.arange(t)[None, :] < rng.integers(2, t + 1, (batch, 1))  # padded rows too
  expected = dict(image_encoder=model.embed_image(model.encode_image(images)[1]),
                  text_encoder=model.embed_text(model.encode_text(ids, mask)[1]))
  inputs = dict(image_encoder=(images,), text_encoder=(ids, mask), report_generator=(images,))
  if "report_generator" in fns:
    graphdef, params = nnx.split(model)
    expected["report_generator"] = decoding.greedy_reports(
        graphdef, nnx.to_pure_dict(params), images, **spec["report_generator"])
  got = {name: np.asarray(fns[name].call(weights, *inputs[name])) for name in fns}
  return {name: float((got[name] != np.asarray(expected[name])).sum()
                      if name == "report_generator" else
                      np.abs(got[name] - np.asarray(expected[name])).max()) for name in fns}
