import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from medjax import sharding
from medjax.models import layers

# The same tiny sizes in every models test: XLA compiles once per shape, and compiles dominate.
WIDTH, HEADS, MLP = 32, 2, 64




def _assert_logical_specs(module):
  params = nnx.state(module, nnx.Param)
  specs = nnx.get_partition_spec(params)
  known = dict(sharding.LOGICAL_AXIS_RULES)
  pairs = zip(jax.tree.leaves_with_path(params), jax.tree.leaves(specs), strict=True)
  for (path, value), spec in pairs:
    name = jax.tree_util.keystr(path)
    assert len(spec) == value.ndim, f"{name}: spec {spec} for shape {value.shape}"
    assert all(axis in known for axis in spec), f"{name}: unknown logical axis in {spec}"


def _x(seed, length=5, batch=2):
  return jax.random.normal(jax.random.key(seed), (batch, length, WIDTH))


@nnx.jit
def _call(module, *args, **kwargs):
  return module(*args, **kwargs)


@pytest.fixture(scope="module")
def cross_block():
  return layers.Block(WIDTH, HEADS, MLP, cross=True, rngs=nnx.Rngs(0))


def test_every_param_of_a_cross_block_has_logical_axes(cross_block):
  _assert_logical_specs(cross_block)
  assert cross_block.attn.query.kernel.shape == (WIDTH, HEADS, WIDTH // HEADS)
  out_spec = nnx.get_partition_spec(nnx.state(cross_block.attn.out))["kernel"].value
  assert tuple(out_spec) == ("heads", "kv", "embed")


def test_attention_matches_explicit_softmax_attention(cross_block):
  attn = cross_block.cross
  x, ctx = _x(1), _x(2, length=7)
  mask = jnp.array([[True] * 7, [True] * 4 + [False] * 3])[:, None, None, :]

  @jax.jit
  def reference(p, x, ctx):
    q = jnp.einsum("btd,dhk->bthk", x, p["query"]["kernel"]) + p["query"]["bias"]
    k = jnp.einsum("bsd,dhk->bshk", ctx, p["key"]["kernel"]) + p["key"]["bias"]
    v = jnp.einsum("bsd,dhk->bshk", ctx, p["value"]["kernel"]) + p["value"]["bias"]
    logits = jnp.einsum("bthk,bshk->bhts", q, k) / np.sqrt(WIDTH // HEADS)
    weights = jax.nn.softmax(jnp.where(mask, logits, -1e30), axis=-1)
    mixed = jnp.einsum("bhts,bshk->bthk", weights, v)
    return jnp.einsum("bthk,hkd->btd", mixed, p["out"]["kernel"]) + p["out"]["bias"]

  got = _call(attn, x, ctx, mask=mask)
  assert got.shape == (2, 5, WIDTH)
  want = reference(nnx.to_pure_dict(nnx.state(attn)), x, ctx)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_masked_keys_do_not_affect_the_output(cross_block):
  attn = cross_block.attn
  x = _x(3)
  mask = layers.padding_mask(jnp.array([[1, 1, 1, 0, 0]] * 2, bool))
  noisy = x.at[:, 3:].set(10.0)
  np.testing.assert_allclose(_call(attn, x, mask=mask)[:, :3],
                             _call(attn, noisy, mask=mask)[:, :3], atol=1e-5)
  unmasked = jnp.ones_like(mask)
  assert not np.allclose(_call(attn, x, mask=unmasked)[:, :3],
                         _call(attn, noisy, mask=unmasked)[:, :3], atol=1e-3)


def test_causal_block_ignores_later_positions():
  block = layers.Block(WIDTH, HEADS, MLP, causal=True, rngs=nnx.Rngs(1))
  x = _x(5)
  out, out_changed = _call(block, x), _call(block, x.at[:, 3:].add(1.0))
  np.testing.assert_allclose(out[:, :3], out_changed[:, :3], atol=1e-5)
  assert not np.allclose(out[:, 3:], out_changed[:, 3:], atol=1e-3)


def test_cross_block_reads_its_context(cross_block):
  x, ctx = _x(6), _x(7, length=9)
  out = _call(cross_block, x, context=ctx)
  assert out.shape == x.shape
  assert not np.allclose(out, _call(cross_block, x, context=ctx * 2.0), atol=1e-3)
  with pytest.raises(ValueError, match="context"):
    cross_block(x)
  with pytest.raises(ValueError, match="context"):
    layers.Block(WIDTH, HEADS, MLP, rngs=nnx.Rngs(0))(x, context=ctx)


def test_cross_attention_ignores_masked_context(cross_block):
  x, ctx = _x(11), _x(12, length=6)
  context_mask = layers.padding_mask(jnp.array([[1, 1, 1, 0, 0, 0], [1] * 6], bool))
  junk = ctx.at[0, 3:].set(50.0)
  np.testing.assert_allclose(_call(cross_block, x, None, ctx, context_mask),
                             _call(cross_block, x, None, junk, context_mask), atol=1e-5)
  assert not np.allclose(_call(cross_block, x, context=ctx)[0],
                         _call(cross_block, x, context=junk)[0], atol=1e-3)


def test_stack_equals_its_blocks_applied_in_turn():
  depth, x, ctx = 3, _x(9), _x(10, length=9)
  mask = layers.padding_mask(jnp.array([[1, 1, 1, 0, 0], [1] * 5], bool))
  stack = layers.Stack(depth, WIDTH, HEADS, MLP, cross=True, rngs=nnx.Rngs(0))
  assert stack.layers.mlp.up.kernel.shape == (depth, WIDTH, MLP)
  _assert_logical_specs(stack)
  stacked = nnx.to_pure_dict(nnx.state(stack))["layers"]
  block_graph, _ = nnx.split(layers.Block(WIDTH, HEADS, MLP, cross=True, rngs=nnx.Rngs(1)))
  want = x
  for i in range(depth):
    block = nnx.merge(block_graph, jax.tree.map(lambda a: a[i], stacked))
    want = block(want, mask, ctx)
  np.testing.assert_allclose(stack(x, mask, ctx), want, rtol=1e-5, atol=1e-5)


def test_remat_policies_keep_values_and_grads_and_save_memory():
  # Long enough sequences that attention probabilities and MLP activations dominate memory.
  x = _x(9, length=48, batch=2)
  graphdef, params = nnx.split(layers.Stack(2, WIDTH, HEADS, MLP, rngs=nnx.Rngs(0)))
  params = nnx.to_pure_dict(params)

  def loss(params, remat):
    stack = nnx.merge(graphdef, params)
    # Scanned, as the pod configs that need remat run: unrolled, XLA's CPU scheduler already
    # frees most activations early, and remat saves little there (README, Performance).
    stack.options = layers.StackOptions(remat=remat, scan=True)
    return jnp.sum(stack(x) ** 2)

  step = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  temp, results = {}, {}
  for policy in layers.REMAT_POLICIES:
    compiled = step.lower(params, policy).compile()
    temp[policy] = compiled.memory_analysis().temp_size_in_bytes
    results[policy] = compiled(params)
  # "dots" keeps the dense matmul outputs, "full" only the block inputs: less and less memory.
  assert temp["none"] > 1.5 * temp["dots"] > 1.5 * temp["full"], temp
  plain, grads = results["none"]
  for policy in ("dots", "full"):
    value, remat_grads = results[policy]
    np.testing.assert_allclose(value, plain, rtol=1e-6)
    leaves, remat_leaves = jax.tree.leaves(grads), jax.tree.leaves(remat_grads)
    assert len(leaves) == len(remat_leaves) > 0
    for g, h in zip(leaves, remat_leaves):
      np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="model.remat"):
    layers.StackOptions(remat=True)


def test_heads_must_divide_width():
  with pytest.raises(ValueError, match="divisible"):
    layers.Attention(30, 4, rngs=nnx.Rngs(0))
