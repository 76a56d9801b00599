"""Attention forward + backward: medjax's layers.attention against jax.nn.dot_product_attention
on this machine, in turns, as JSON.

  python -m benchmarks.attention_forms [--rounds 3] [--batch 32] [--length 196] [--heads 6]

Defaults: one ViT-S/16 block's self-attention at batch 32 (196 tokens, 6 heads of 64). Reported:
median milliseconds of value_and_grad of sum(out ** 2) w.r.t. q, k, v, in float32 and bf16.
"""
import json
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from medjax.models import layers

flags.DEFINE_integer("rounds", 3, "Rounds; each times every implementation once.")
flags.DEFINE_integer("batch", 32, "Batch size.")
flags.DEFINE_integer("length", 196, "Sequence length.")
flags.DEFINE_integer("heads", 6, "Heads (of 64 dims each).")

IMPLEMENTATIONS = {"medjax layers.attention": layers.attention,
                   "jax.nn.dot_product_attention": jax.nn.dot_product_attention}


def _step(attend):
  loss = lambda q, k, v: jnp.sum(attend(q, k, v).astype(jnp.float32) ** 2)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def run(rounds: int, batch: int, length: int, heads: int) -> dict:
  keys = jax.random.split(jax.random.key(0), 3)
  times = {}
  for _ in range(rounds):
    for dtype in (jnp.float32, jnp.bfloat16):
      qkv = [jax.random.normal(key, (batch, length, heads, 64), dtype) for key in keys]
      for name, attend in IMPLEMENTATIONS.items():
        step = _step(attend)
        jax.block_until_ready(step(*qkv))
        calls = []
        for _ in range(5):
          t0 = time.perf_counter()
          jax.block_until_ready(step(*qkv))
          calls.append(time.perf_counter() - t0)
        times.setdefault(f"{jnp.dtype(dtype).name}: {name}", []).append(statistics.median(calls))
  return dict(shape=dict(batch=batch, length=length, heads=heads, head_dim=64),
              ms={name: round(1e3 * statistics.median(t), 1) for name, t in times.items()})


def main(argv):
  del argv
  f = flags.FLAGS
  print(json.dumps(run(f.rounds, f.batch, f.length, f.heads), indent=2))


if __name__ == "__main__":
  app.run(main)
