"""How fast XLA runs each form of a dense layer's three products on this machine, as JSON.

  python -m benchmarks.matmul_forms [--rounds 3] [--rows 6272] [--k 384] [--n 1536]

A dense layer y = x @ w (x [M, K], w [K, N]; defaults: ViT-S/16's MLP at batch 32) needs three
products per step: the forward x @ w, the input gradient g @ w^T and the weight gradient
x^T @ g. Autodiff writes the last with x contracted over its first dimension ("lhs_t"), which
XLA's CPU backend runs in float32 even for bf16 inputs; `matmul.transposed` (one copy of x)
gives the canonical form instead. Each form is timed in float32 and bf16 (float32
accumulation), in turns over --rounds rounds; medians in GFLOP/s beside the 2048^3 peak.
"""
import json
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from jax import lax

from benchmarks import peak_flops
from medjax.models import matmul

flags.DEFINE_integer("rounds", 3, "Rounds; each times every form once (median of 5 calls).")
flags.DEFINE_integer("rows", 6272, "M: rows of x (tokens of the batch).")
flags.DEFINE_integer("k", 384, "K: the layer's input width.")
flags.DEFINE_integer("n", 1536, "N: the layer's output width.")

F32 = dict(preferred_element_type=jnp.float32)
FORMS = {  # name -> (product, operand names)
    "forward x @ w": (lambda x, w: lax.dot_general(x, w, (((1,), (0,)), ((), ())), **F32),
                      ("x", "w")),
    "input grad g @ w^T": (lambda g, w: lax.dot_general(g, w, (((1,), (1,)), ((), ())), **F32),
                           ("g", "w")),
    "weight grad x^T @ g (autodiff)": (
        lambda x, g: lax.dot_general(x, g, (((0,), (0,)), ((), ())), **F32), ("x", "g")),
    "weight grad transposed(x) @ g": (
        lambda x, g: lax.dot_general(matmul.transposed(x), g, (((1,), (0,)), ((), ())), **F32),
        ("x", "g")),
}


def _median_seconds(fn, args, calls: int = 5) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(calls):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def run(rounds: int, m: int, k: int, n: int) -> dict:
  keys = jax.random.split(jax.random.key(0), 3)
  flops = 2 * m * k * n
  times = {}
  for _ in range(rounds):
    for dtype in (jnp.float32, jnp.bfloat16):
      arrays = dict(x=jax.random.normal(keys[0], (m, k), dtype),
                    w=jax.random.normal(keys[1], (k, n), dtype),
                    g=jax.random.normal(keys[2], (m, n), dtype))
      for name, (fn, operands) in FORMS.items():
        seconds = _median_seconds(jax.jit(fn), [arrays[o] for o in operands])
        times.setdefault(f"{jnp.dtype(dtype).name}: {name}", []).append(seconds)
  return dict(shape=dict(m=m, k=k, n=n), peak=peak_flops.measure(),
              gflops={name: round(flops / statistics.median(t) / 1e9, 1)
                      for name, t in times.items()})


def main(argv):
  del argv
  f = flags.FLAGS
  print(json.dumps(run(f.rounds, f.rows, f.k, f.n), indent=2))


if __name__ == "__main__":
  app.run(main)
