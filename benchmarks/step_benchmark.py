"""Train-step speed of a config's stages on this machine: step time, examples/s and MFU, as JSON.

  python -m benchmarks.step_benchmark --config medmllm_s [--rounds 3] [--steps 2]

  # before / after in one run: another checkout, and this one in two precisions
  git worktree add /tmp/medjax-before c390f02
  python -m benchmarks.step_benchmark --config medmllm_s \
      --sides '/tmp/medjax-before;.+model.dtype=float32;.+model.dtype=bfloat16'

  # recipes of one config against each other: a side's own config arg after '@'
  python -m benchmarks.step_benchmark --config medmllm_s \
      --sides '.@only=mae,steps=1600;.@only=dino+ibot,steps=1600'

Each side is a checkout (its `medjax` runs in its own process, benchmarks/step_worker.py) plus
optional `+field=value` config overrides, then optionally `@ARG`: the config's arg for this side
(the rest of the spec, '+' and all; without it, --config's; such sides must plan as many
stages). Per stage, every side compiles the stage's step, then the sides take turns: --rounds
rounds of --steps steps each (A B A B), on synthetic batches of the config's shapes (the model
and its sharding, not the input pipeline). The matmul peak is measured once per round, here.
MFU = the step's matmul FLOPs per device (`aot.step_flops_per_device`, this checkout's count of
the side's model and stage) / the side's median step time / the peak of its compute dtype (f32,
or bf16 -> f32). The load average is reported before and after: the machine may be shared.
"""
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from absl import flags

from benchmarks import peak_flops, step_worker
from medjax import objectives, sharding
from medjax.cli import common
from medjax.train import aot, stages

common.define_config_flag()
flags.DEFINE_string("sides", ".", "';'-separated sides: a checkout path, then optional "
                    "'+field=value' overrides, e.g. '.+model.dtype=float32;/tmp/before'.")
flags.DEFINE_integer("rounds", 3, "Rounds; each times every side in turn.")
flags.DEFINE_integer("steps", 2, "Timed steps per side per round (after 2 warm-up steps).")

WORKER = Path(__file__).with_name("step_worker.py")


class _Side:
  """A worker process compiling and timing one stage's step of one checkout and overrides."""

  def __init__(self, spec: str, config_spec: str, stage_index: int):
    head, at, arg = spec.partition("@")
    tree, *overrides = head.split("+")
    if at:
      config_spec = config_spec.partition(":")[0] + ":" + arg
    self.spec = spec
    self.overrides = overrides
    # This checkout's view of the side's model and stage, for its FLOPs.
    self.config = step_worker.config_of(config_spec, overrides)
    self.stage = stages.plan(self.config)[stage_index]
    env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve()))
    self._proc = subprocess.Popen(
        [sys.executable, str(WORKER), config_spec, str(stage_index), *overrides], env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    self.ready = self._read()

  def _read(self) -> dict:
    line = self._proc.stdout.readline()
    if not line:
      raise RuntimeError(f"step worker for side {self.spec!r} exited (rc {self._proc.wait()})")
    return json.loads(line)

  def time(self, steps: int) -> list[float]:
    self._proc.stdin.write(f"{steps}\n")
    self._proc.stdin.flush()
    return self._read()["seconds"]

  def close(self):
    self._proc.stdin.close()
    self._proc.wait()


def _config_spec() -> str:
  """The --config value as the workers re-read it: a packaged config's name, with its arg."""
  value = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")), None)
  if value is None:
    value = sys.argv[sys.argv.index("--config") + 1]
  name, sep, arg = value.partition(":")
  return Path(name).stem + sep + arg


def run(config, sides: list[str], rounds: int, steps: int) -> dict:
  mesh = sharding.make_mesh(config.mesh)
  out = dict(devices=mesh.size, batch_size=config.batch_size, sides=sides,
             load_average_before=os.getloadavg(), peaks=[], stages={})
  for index, stage in enumerate(stages.plan(config)):
    workers = [_Side(spec, _config_spec(), index) for spec in sides]
    times = {w.spec: [] for w in workers}
    try:
      for _ in range(rounds):
        out["peaks"].append(peak_flops.measure())
        for w in workers:
          times[w.spec] += w.time(steps)
    finally:
      for w in workers:
        w.close()
    first = statistics.median(times[sides[0]])
    result = dict(objectives=sorted(objectives.active(stage.objectives)), sides={})
    for w in workers:
      median = statistics.median(times[w.spec])
      flops = aot.step_flops_per_device(w.config, mesh, w.stage)
      peak_key = "bf16_in_f32_acc_flops" if w.ready["dtype"] == "bfloat16" else "f32_flops"
      peak = statistics.median(p[peak_key] for p in out["peaks"][-rounds:])
      result["sides"][w.spec] = dict(
          w.ready, objectives=sorted(objectives.active(w.stage.objectives)),
          flops_per_step_per_device=flops, step_seconds=times[w.spec],
          step_seconds_median=median, examples_per_second=w.config.batch_size / median,
          mfu=flops / median / peak, time_over_first_side=median / first)
    out["stages"][stage.name] = result
  out["load_average_after"] = os.getloadavg()
  return out


def main(argv):
  del argv
  f = flags.FLAGS
  print(json.dumps(run(common.config(), f.sides.split(";"), f.rounds, f.steps), indent=2))


if __name__ == "__main__":
  common.run(main)
