"""Zero-shot classification from text prompts, CLIP-style: no label is used.

Each class of a task has a prompt set (`config.prompts[task]`, positive and negative). Its
prompts go through the text tower into the image-text space; their mean, renormalised, is the
class embedding (Radford et al. 2021's prompt ensembling). An image's score is the cosine of its
image embedding to the positive class minus that to the negative class: the two-class softmax
over the logits (scale x cosine) is monotone in that difference, so its AUROC is the same.
"""
import functools

import jax
import numpy as np
from flax import nnx

from medjax.configs import resolve
from medjax.evals.labelled import map_batches


# Module-level and keyed on the model's graph: one compile per config and batch shape.
@functools.partial(jax.jit, static_argnames="graphdef")
def _text_embeddings(graphdef, params, ids, mask):
  model = nnx.merge(graphdef, params)
  return model.embed_text(model.encode_text(ids, mask)[1])


@functools.partial(jax.jit, static_argnames="graphdef")
def _image_embeddings(graphdef, params, images):
  model = nnx.merge(graphdef, params)
  return model.embed_image(model.encode_image(images)[1])


def class_embeddings(graphdef, params, tokenizer, prompts: dict, text_len: int) -> np.ndarray:
  """[2, proj_dim] unit rows: the negative then the positive class's mean prompt embedding."""
  out = []
  for side in ("negative", "positive"):
    ids, mask = map(np.stack, zip(*(tokenizer.encode(p, text_len) for p in prompts[side])))
    mean = np.asarray(_text_embeddings(graphdef, params, ids, mask)).mean(axis=0)
    out.append(mean / np.linalg.norm(mean))
  return np.stack(out)


def scores(image_embeddings: np.ndarray, classes: np.ndarray) -> np.ndarray:
  """[n]: cosine to the positive class minus cosine to the negative one, for unit image
  embeddings [n, d] and class embeddings [2, d] (negative, positive)."""
  cosines = image_embeddings @ classes.T
  return cosines[:, 1] - cosines[:, 0]


def image_embeddings(graphdef, params, images: np.ndarray, batch: int = 32) -> np.ndarray:
  """[n, proj_dim]: unit image embeddings in the image-text space, in batches."""
  return map_batches(lambda x: _image_embeddings(graphdef, params, x), (images,), batch)


def task_scores(config, graphdef, params, tokenizer, task: str, images: np.ndarray) -> np.ndarray:
  """[n] zero-shot scores of `images` for `task`, with the config's prompts for it."""
  config = resolve.resolved(config)
  if task not in config.prompts:
    raise ValueError(f"zero-shot {task!r}: config.prompts has no prompts for it (it has "
                     f"{sorted(config.prompts)}); add positive=(...), negative=(...)")
  classes = class_embeddings(graphdef, params, tokenizer, config.prompts[task],
                             int(config.data.text_len))
  return scores(image_embeddings(graphdef, params, images), classes)
