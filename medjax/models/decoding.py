"""Text generation with MedMLLM's decoder: greedy and beam search, each one compiled loop.

Both take `next_logits(ids [R, L], t) -> [R, V]`, the logits of the token after position t for
every row; the rest of `ids` past t is padding the causal decoder never reads. Decoding
recomputes the prefix at each step (no key/value cache: short texts, small decoders), and only
position t's vocabulary projection (`MedMLLM.decode(..., at=t)`). A row stops at EOS: padding
follows it. `image_logits` builds `next_logits` from a model and X-rays.
"""
import jax
import jax.numpy as jnp
from flax import nnx


def image_logits(graphdef, params, images: jax.Array, length: int, vocab: int, copies: int = 1):
  """`next_logits` of the decoder conditioned on `images` [B, S, S, C], each image repeated
  `copies` times (rows b * copies ... b * copies + copies - 1: a beam each), over the first
  `vocab` ids (the model's vocabulary may be padded past the tokenizer's; those ids are never
  chosen)."""
  tokens = jnp.repeat(nnx.merge(graphdef, params).encode_image(images)[0], copies, axis=0)
  positions = jnp.arange(length)

  def next_logits(ids, t):
    model = nnx.merge(graphdef, params)  # inside the loop body: nnx needs its own trace level
    mask = jnp.broadcast_to(positions <= t, ids.shape)
    return model.decode(ids, mask, tokens, at=t)[:, :vocab]

  return next_logits


def greedy(next_logits, rows: int, length: int, bos: int, eos: int, pad: int) -> jax.Array:
  """ids [rows, length] int32: BOS, then each step's argmax, padding after EOS."""
  ids = jnp.full((rows, length), pad, jnp.int32).at[:, 0].set(bos)

  def step(t, carry):
    ids, done = carry
    token = jnp.where(done, pad, jnp.argmax(next_logits(ids, t), -1).astype(jnp.int32))
    return ids.at[:, t + 1].set(token), done | (token == eos)

  return jax.lax.fori_loop(0, length - 1, step, (ids, jnp.zeros(rows, bool)))[0]


def beam_search(next_logits, rows: int, length: int, beam: int, bos: int, eos: int,
                pad: int) -> tuple[jax.Array, jax.Array]:
  """The most probable sequence per row found by a beam of `beam` hypotheses: (ids [rows,
  length] int32, its log-probability [rows], the sum over its tokens up to EOS). `next_logits`
  takes rows * beam rows, row r's beams at r * beam ...; no length penalty. A finished
  hypothesis stays in the beam at its score (it only grows padding, at no cost), so it competes
  with the unfinished ones, whose scores can only fall."""
  k = beam
  ids = jnp.full((rows * k, length), pad, jnp.int32).at[:, 0].set(bos)
  # All beams start equal: only the first may expand at step 0, or the top k would be copies.
  scores = jnp.tile(jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf), (rows, 1))
  done = jnp.zeros((rows, k), bool)

  def step(t, carry):
    ids, scores, done = carry
    logp = jax.nn.log_softmax(next_logits(ids, t).astype(jnp.float32), -1)
    vocab = logp.shape[-1]
    logp = logp.reshape(rows, k, vocab)
    pad_only = jnp.full(vocab, -jnp.inf).at[pad].set(0.0)
    logp = jnp.where(done[..., None], pad_only, logp)
    best, flat = jax.lax.top_k((scores[..., None] + logp).reshape(rows, k * vocab), k)
    parent, token = flat // vocab, (flat % vocab).astype(jnp.int32)
    source = (jnp.arange(rows)[:, None] * k + parent).reshape(-1)
    ids = ids[source].at[:, t + 1].set(token.reshape(-1))
    done = jnp.take_along_axis(done, parent, axis=1) | (token == eos)
    return ids, best, done

  ids, scores, _ = jax.lax.fori_loop(0, length - 1, step, (ids, scores, done))
  top = jnp.argmax(scores, axis=1)
  return ids.reshape(rows, k, length)[jnp.arange(rows), top], scores[jnp.arange(rows), top]


def greedy_reports(graphdef, params, images: jax.Array, length: int, vocab: int, bos: int,
                   eos: int, pad: int) -> jax.Array:
  """Greedy report ids [B, length] for X-rays [B, S, S, C]: what evaluations and the exported
  `report_generator` run."""
  return greedy(image_logits(graphdef, params, images, length, vocab), images.shape[0], length,
                bos, eos, pad)


def beam_reports(graphdef, params, images: jax.Array, length: int, beam: int, vocab: int,
                 bos: int, eos: int, pad: int) -> tuple[jax.Array, jax.Array]:
  """Beam-search report ids [B, length] and their log-probabilities [B]."""
  return beam_search(image_logits(graphdef, params, images, length, vocab, beam),
                     images.shape[0], length, beam, bos, eos, pad)
