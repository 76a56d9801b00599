"""XLA's optimisation passes off for a block: they are most of the compile time of tiny graphs on
CPU. For test packages whose numbers do not depend on them (tests/models, tests/hf)."""
import contextlib

import jax


@contextlib.contextmanager
def quick_compiles():
  before = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", before)
