"""The chunked vocabulary cross-entropy (model.logits_chunk) equals the plain one."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models.text import TiedLogits
from medjax.objectives import _common

B, T, D, V = 2, 11, 8, 300


@pytest.fixture(scope="module")
def inputs():
  keys = jax.random.split(jax.random.key(0), 4)
  states = jax.random.normal(keys[0], (B, T, D))
  table = jax.random.normal(keys[1], (V, D))
  targets = jax.random.randint(keys[2], (B, T), 0, V)
  weights = (jax.random.uniform(keys[3], (B, T)) < 0.7).astype(jnp.float32)
  return states, table, targets, weights


def _loss(chunk, kind):
  def loss(states, table, targets, weights):
    logits = TiedLogits(states, table, chunk)
    if kind == "next":  # T - 1 positions: not a multiple of the chunk (padding path)
      return _common.next_token_cross_entropy(logits, targets, weights > 0, jnp.ones(B, bool))
    return _common.token_cross_entropy(logits, targets, weights)
  return loss


@pytest.mark.parametrize("kind", ["token", "next"])
def test_chunked_equals_plain_in_values_and_grads(inputs, kind):
  def run(chunk):  # (loss, accuracy, tokens), (d loss / d states, d loss / d table)
    loss = _loss(chunk, kind)
    grads = jax.grad(lambda *a: loss(*a)[0], argnums=(0, 1))
    return jax.jit(lambda *a: (loss(*a), grads(*a)))(*inputs)

  metrics, grads = run(0)
  assert np.isfinite(metrics[0]) and float(metrics[2]) > 0
  for chunk in (1, 4):  # 4: positions padded up to a multiple of the chunk
    got_metrics, got_grads = run(chunk)
    for value, want in zip(got_metrics, metrics):
      np.testing.assert_allclose(value, want, rtol=1e-6)
    for g, want in zip(got_grads, grads):
      np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)


def test_chunks_bound_the_logits_memory():
  # [B, 64, 4096] float32 logits are 2 MiB, their gradient as much again; 8 positions at a time
  # hold an eighth of that.
  states = jnp.zeros((B, 64, D))
  table = jnp.zeros((4096, D))
  targets = jnp.zeros((B, 64), jnp.int32)
  weights = jnp.ones((B, 64))

  def temp_bytes(chunk):
    grad = jax.jit(jax.grad(lambda s, t: _loss(chunk, "token")(s, t, targets, weights)[0],
                            argnums=(0, 1)))
    return grad.lower(states, table).compile().memory_analysis().temp_size_in_bytes

  plain, chunked = temp_bytes(0), temp_bytes(8)
  assert plain > 2 * 2**20 and chunked < plain / 3, (plain, chunked)
