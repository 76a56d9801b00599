import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from medjax.models import text

VOCAB, MAX_LEN = 64, 16
TOWER = dict(vocab_size=VOCAB, width=32, depth=1, heads=2, mlp_dim=64, max_len=MAX_LEN)




@nnx.jit
def _call(module, *args):
  return module(*args)


@pytest.fixture(scope="module")
def encoder():
  return text.TextEncoder(**TOWER, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def decoder():
  return text.TextDecoder(**TOWER, rngs=nnx.Rngs(1))


def _ids(seed, length=8):
  return jax.random.randint(jax.random.key(seed), (2, length), 1, VOCAB, jnp.int32)


def test_encoder_padding_does_not_change_real_positions(encoder):
  ids = _ids(0)
  lengths = np.array([5, 8])
  mask = jnp.arange(8)[None] < lengths[:, None]
  other_pad = jnp.where(mask, ids, _ids(1))  # different junk in the padded slots
  states, pooled = _call(encoder, ids, mask)
  states2, pooled2 = _call(encoder, other_pad, mask)
  assert states.shape == (2, 8, 32) and pooled.shape == (2, 32) and pooled.dtype == jnp.float32
  np.testing.assert_allclose(pooled, states[:, 0], atol=1e-6)
  np.testing.assert_allclose(pooled, pooled2, atol=1e-5)
  np.testing.assert_allclose(states[0, :5], states2[0, :5], atol=1e-5)
  np.testing.assert_allclose(states[1], states2[1], atol=1e-5)  # no padding in row 1
  # Without the mask the junk would leak into the real positions.
  full = jnp.ones_like(mask)
  assert not np.allclose(_call(encoder, ids, full)[0][0, :5],
                         _call(encoder, other_pad, full)[0][0, :5], atol=1e-3)


def test_encoder_is_bidirectional(encoder):
  ids, mask = _ids(2), jnp.ones((2, 8), bool)
  states, _ = _call(encoder, ids, mask)
  states2, _ = _call(encoder, ids.at[:, -1].set((ids[:, -1] + 1) % VOCAB), mask)
  assert not np.allclose(states[:, 0], states2[:, 0], atol=1e-4)


def test_encoder_mlm_logits_are_tied_and_float32(encoder):
  states = jax.random.normal(jax.random.key(3), (2, 8, 32))
  logits = encoder.logits(states)
  assert logits.shape == (2, 8, VOCAB) and logits.dtype == jnp.float32
  table = encoder.embed.tokens.embedding[...]
  np.testing.assert_allclose(logits, jnp.einsum("btd,vd->btv", states, table), atol=1e-5)


def test_sequences_longer_than_max_len_are_rejected(encoder):
  with pytest.raises(ValueError, match="max_len"):
    encoder(jnp.zeros((1, MAX_LEN + 1), jnp.int32), jnp.ones((1, MAX_LEN + 1), bool))


def test_decoder_is_causal_and_reads_the_context(decoder):
  ids, mask = _ids(4), jnp.ones((2, 8), bool)
  context = jax.random.normal(jax.random.key(5), (2, 6, 32))
  logits = _call(decoder, ids, mask, context)
  assert logits.shape == (2, 8, VOCAB) and logits.dtype == jnp.float32
  t = 3
  changed = ids.at[:, t + 1:].set((ids[:, t + 1:] + 7) % VOCAB)
  logits2 = _call(decoder, changed, mask, context)
  np.testing.assert_allclose(logits[:, :t + 1], logits2[:, :t + 1], atol=1e-5)
  assert not np.allclose(logits[:, t + 1:], logits2[:, t + 1:], atol=1e-4)
  assert not np.allclose(logits, _call(decoder, ids, mask, context + 1.0), atol=1e-4)


def test_decoder_ignores_padded_context_positions(decoder):
  ids, mask = _ids(6), jnp.ones((2, 8), bool)
  context = jax.random.normal(jax.random.key(7), (2, 6, 32))
  context_mask = jnp.arange(6)[None] < jnp.array([[4], [6]])
  junk = context.at[0, 4:].set(100.0)  # row 0's padded positions only
  np.testing.assert_allclose(_call(decoder, ids, mask, context, context_mask),
                             _call(decoder, ids, mask, junk, context_mask), atol=1e-5)
  assert not np.allclose(_call(decoder, ids, mask, context)[0],
                         _call(decoder, ids, mask, junk)[0], atol=1e-3)


def test_decoder_output_is_tied_to_its_embedding(decoder):
  specs = jax.tree.leaves(nnx.get_partition_spec(nnx.state(decoder, nnx.Param)))
  assert [tuple(s) for s in specs if "vocab" in s] == [("vocab", "embed")]  # logits reuse the table
