"""The trainer CLI run in a subprocess on one CPU device (bit for bit reproducible), and what the
tests read of its workdir. tests/train/conftest.py keeps one uninterrupted reference run."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

STEPS = 40  # the reference run's length


def cli(workdir, data_dir, *overrides, steps=STEPS):
  """The trainer command on one device; `overrides` come last. It trains RAD-DINO's tiny
  self-distillation beside image_text, so a resumed run also restores the EMA teacher, the
  objectives' centres, the local crops and the hidden patches."""
  return [sys.executable, "-m", "medjax.cli.train", "--config=rad_dino:tiny",
          "--config.objectives.image_text.weight=1.0", f"--workdir={workdir}",
          f"--config.data.dir={data_dir}", "--config.mesh.data=1", "--config.log_every=1",
          f"--config.total_steps={steps}",
          "--config.record_batch_digests=True", *overrides]


def cpu_env(devices: int = 1) -> dict:
  """This process's environment for a subprocess of `devices` CPU devices (other XLA flags
  kept)."""
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                 os.environ.get("XLA_FLAGS", "")).split()
  if devices > 1:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  return dict(os.environ, XLA_FLAGS=" ".join(flags))


def run(cmd, timeout=600):
  done = subprocess.run(cmd, env=cpu_env(), capture_output=True, text=True,
                        timeout=timeout)
  assert done.returncode == 0, done.stderr[-3000:]
  return done


def saved(workdir, step=None):
  """(step, train state as numpy) of a workdir's newest (or given) checkpoint: params, optimizer
  state and, where trained, the EMA teacher and the objectives' state."""
  with ocp.CheckpointManager(Path(workdir) / "checkpoints", item_names=("state", "meta")) as mgr:
    step = mgr.latest_step() if step is None else step
    state = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  return step, jax.tree.map(np.asarray, state)


def digests(workdir) -> dict:
  lines = (Path(workdir) / "batch_digests.jsonl").read_text().splitlines()
  return {r["step"]: r["sha256"] for r in map(json.loads, lines)}


def logged_steps(workdir) -> list[int]:
  return [json.loads(line)["step"]
          for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
