# The same quick-compile fixture as tests/models: the sharded-equivalence test compiles both of
# its sides the same way, so nothing here depends on XLA's optimisation passes.
from tests.models.conftest import _quick_compiles  # noqa: F401
