"""What every medjax command shares: the --config flag (a packaged config by name, or a file),
process start-up on a pod, the compilation cache, and errors a user can act on instead of
tracebacks.

  medjax-train --config medmllm_s --workdir runs/s              # medjax/configs/medmllm_s.py
  medjax-train --config my_configs/site.py:tiny --workdir runs/x  # any file, with its arg
  # one process per host: explicit (as the tests do on 127.0.0.1), or detected on TPU VMs / SLURM
  medjax-train ... --coordinator=10.0.0.2:1234 --num_processes=4 --process_id=$ID
  medjax-train ... --multiprocess
"""
from __future__ import annotations

import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from medjax import paths
from medjax.configs import resolve
from medjax.train import checkpoint, processes

CONFIGS = paths.path(__file__).parents[1] / "configs"
# Errors about the user's config, data, workdir or disk, not medjax bugs.
_USER_ERRORS = (resolve.ConfigError, checkpoint.IncompatibleRun, OSError, TimeoutError,
                FloatingPointError)


def define_config_flag() -> None:
  config_flags.DEFINE_config_file(
      "config", None, "A config: a name in medjax/configs (medmllm_s, medmllm_tiny, ...) or a "
      "file path, either with ':<arg>' (e.g. medmllm_s:only=mae,steps=100). Override any field "
      "with --config.<field>=<value>.", lock_config=True)


def _config_path(value: str) -> str:
  """'medmllm_s[:arg]' -> the packaged file; a path (anything with / or .py) stays as given."""
  name, sep, arg = value.partition(":")
  if "/" in name or name.endswith(".py"):
    return value
  path = CONFIGS / f"{name}.py"
  if not path.is_file():
    known = sorted(p.stem for p in CONFIGS.glob("*.py") if not p.stem.startswith("_")
                   and p.stem not in ("base", "common", "resolve"))
    raise app.UsageError(f"--config={value}: no config named {name!r}; known: {known} "
                         "(or give a file path)")
  return f"{path}{sep}{arg}"


def _with_config_paths(argv: list[str]) -> list[str]:
  out, i = [], 0
  while i < len(argv):
    arg = argv[i]
    if arg == "--config" and i + 1 < len(argv):
      out += [arg, _config_path(argv[i + 1])]
      i += 2
      continue
    if arg.startswith("--config="):
      arg = "--config=" + _config_path(arg.split("=", 1)[1])
    out.append(arg)
    i += 1
  return out


def define_process_flags() -> None:
  flags.DEFINE_string("coordinator", "", "host:port of process 0's coordination service (with "
                      "--num_processes and --process_id); it binds to exactly this address.")
  flags.DEFINE_integer("num_processes", 0, "Processes of the run (one per host).")
  flags.DEFINE_integer("process_id", -1, "This process's index, 0 <= id < num_processes.")
  flags.DEFINE_bool("multiprocess", False, "Detect the processes (TPU VM metadata, SLURM).")


def start_processes(config) -> None:
  """Joins the other processes (if any) before anything touches a device."""
  f = flags.FLAGS
  processes.start(coordinator=f.coordinator, num_processes=f.num_processes,
                  process_id=f.process_id, auto=f.multiprocess,
                  peer_timeout=config.timeouts.lost_process_seconds)


def config():
  """The --config value, resolved and validated (medjax.configs.resolve), before any device
  work: a bad field is a ConfigError naming it."""
  return resolve.resolved(flags.FLAGS.config)


def run(main, required=("config",)) -> None:
  """absl's app.run with packaged config names, and one-line errors for bad flags and configs."""
  try:
    argv = _with_config_paths(sys.argv)
  except app.UsageError as e:
    sys.exit(f"error: {e}")
  for name in required:
    flags.mark_flag_as_required(name)
  # Repeated launches (resumes, the evaluations of one config) load compiled steps from disk.
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", str(paths.cache_dir() / "jax"))

  def guarded(args):
    try:
      return main(args)
    except _USER_ERRORS as e:  # what a user can act on: one message, not a traceback
      logging.error("%s: %s", type(e).__name__, e)
      sys.exit(f"error: {e}")

  app.run(guarded, argv=argv, flags_parser=_parse_flags)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with an override of a field the config lacks (ml_collections raises
  KeyError / AttributeError deep in its parser) reported in one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {e}\nPass --helpshort or --helpfull to see the flags.")
  except (KeyError, AttributeError) as e:
    field = next((a.split("=", 1)[0].removeprefix("--") for a in argv[1:]
                  if a.startswith("--config.") and str(e).strip("'\"") in a), None)
    sys.exit(f"error: {field or 'a --config.<field> override'}: the config has no field "
             f"{str(e).strip(chr(34))} (fields are listed in medjax/configs/base.py)")
