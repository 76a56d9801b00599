"""One path API (medjax/paths.py): a cloud URL reaches Orbax, TFDS and the file layer as the URL
it is, and no module outside it opens, lists or joins paths with os / open() / pathlib.

No network here, so each run stops at its first remote access: the boundary it would cross
(Orbax's CheckpointManager, TFDS's builder, etils' file layer) is replaced by a recorder that
stops the run with the path it was given."""
import re
from pathlib import Path

import jax
import pytest
from etils.epath import gpath

from medjax import paths
from medjax.configs import medmllm_tiny
from medjax.train import checkpoint, loop, weights

REPO = Path(__file__).resolve().parents[1]
# Converters read the local source tree a user points at (symlink checks need os), and write a
# local directory that is swapped in by rename (a bucket gets a copy of the finished dataset).
LOCAL_ONLY = ("medjax/paths.py", "medjax/data_prep/")
FORBIDDEN = re.compile(r"(?<![.\w])open\(|\bos\.(path|listdir|makedirs|remove|rename|walk|"
                       r"scandir|mkdir|unlink)\b|\bshutil\.|\bpathlib\b|(?<![.\w])Path\(")


def test_no_module_outside_the_path_api_touches_paths_with_os_or_open():
  offenders = []
  for path in sorted((REPO / "medjax").rglob("*.py")):
    rel = str(path.relative_to(REPO))
    if rel.startswith(LOCAL_ONLY):
      continue
    for n, line in enumerate(path.read_text().splitlines(), 1):
      code = line.split("#", 1)[0]
      if FORBIDDEN.search(code) and not code.lstrip().startswith(('"', "'")):
        offenders.append(f"{rel}:{n}: {line.strip()}")
  assert not offenders, "\n".join(offenders)


def test_urls_stay_urls_and_local_paths_become_absolute():
  assert str(paths.path("gs://bucket/runs/a") / "checkpoints") == "gs://bucket/runs/a/checkpoints"
  assert paths.path("runs/a").is_absolute()
  assert not paths.is_url("/tmp/x") and paths.is_url("s3://b/x")


class _Remote(Exception):
  """What a recorder raises: the run reached a remote path."""


@pytest.fixture
def record_remote(monkeypatch):
  """Every etils file operation on a gs:// path stops the run, naming the path."""
  def recorder(original):
    def call(self, *args, **kwargs):
      if str(self).startswith("gs://"):
        raise _Remote(str(self))
      return original(self, *args, **kwargs)
    return call

  for name in ("exists", "is_dir", "open", "mkdir", "read_bytes", "read_text", "iterdir",
               "glob"):
    monkeypatch.setattr(gpath._GPath, name, recorder(getattr(gpath._GPath, name)))


def _config(data_dir, **fields):
  c = medmllm_tiny.get_config()
  c.data.dir = str(data_dir)
  c.mesh = dict(data=1, fsdp=1, tensor=1)
  c.update(fields)
  return c


def test_a_gs_workdir_reaches_orbax_unmangled(covid_data_dir, monkeypatch, record_remote):
  def manager(directory, **kwargs):
    raise _Remote(str(directory))

  monkeypatch.setattr(checkpoint.ocp, "CheckpointManager", manager)
  with pytest.raises(_Remote) as stopped:
    loop.train(_config(covid_data_dir), "gs://bucket/runs/tiny", devices=jax.devices()[:1])
  assert str(stopped.value) == "gs://bucket/runs/tiny/checkpoints"


def test_a_gs_data_dir_reaches_tfds_unmangled(monkeypatch, record_remote):
  seen = []

  def builder(name, data_dir=None, **kwargs):
    seen.append(data_dir)
    raise _Remote(str(data_dir))

  monkeypatch.setattr("tensorflow_datasets.builder", builder)
  with pytest.raises(_Remote):
    loop.train(_config("gs://bucket/medjax_data"), "/tmp/never-written",
               devices=jax.devices()[:1])
  assert seen == ["gs://bucket/medjax_data"]


def test_a_gs_init_from_reaches_the_file_layer_unmangled(covid_data_dir, record_remote):
  config = _config(covid_data_dir)
  with pytest.raises(_Remote) as stopped:
    weights.load_model(config, "gs://bucket/runs/pretrained")
  assert str(stopped.value).startswith("gs://bucket/runs/pretrained/")
