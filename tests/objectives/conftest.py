import jax
import pytest


@pytest.fixture(autouse=True, scope="package")
def _quick_compiles():
  # On CPU, XLA's optimisation passes take most of the compile time of these small graphs; the
  # sharded-equivalence test compiles both sides the same way, so nothing here depends on them.
  before = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", before)
