import pytest
from quick_compiles import quick_compiles


@pytest.fixture(autouse=True, scope="package")
def _quick_compiles():
  with quick_compiles():
    yield
