"""One side of benchmarks/step_benchmark.py --sides: a process that compiles one stage's train
step with whatever `medjax` its PYTHONPATH gives (this checkout or an older one), then times
steps on request, so two code versions (or recipes) alternate in one run.

  python benchmarks/step_worker.py CONFIG[:ARG] STAGE_INDEX [field=value ...]

Prints one JSON line when ready ({"compile_seconds", "loss", "dtype"}: the compute dtype);
then, per line "N" on stdin, runs N steps and prints {"seconds": [...]}. It uses only
aot.compile_train_step (given a Stage), aot.synthetic_batch, state.init and stages.plan, so
any checkout since those APIs can be a side.
"""
import importlib
import json
import sys
import time

import jax


def config_of(spec: str, overrides: list[str]):
  """The resolved config of 'NAME[:ARG]' with 'field=value' overrides."""
  from medjax.configs import resolve
  name, _, arg = spec.partition(":")
  config = importlib.import_module(f"medjax.configs.{name}").get_config(arg or None)
  for item in overrides:
    key, _, value = item.partition("=")
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    old = node[leaf]
    node[leaf] = value.lower() == "true" if isinstance(old, bool) else type(old)(value)
  return resolve.resolved(config)


def main(argv: list[str]) -> None:
  from medjax import sharding
  from medjax.train import aot, stages, state as state_lib

  config = config_of(argv[1], argv[3:])
  stage = stages.plan(config)[int(argv[2])]
  mesh = sharding.make_mesh(config.mesh)
  compiled, ts, compile_seconds = aot.compile_train_step(config, mesh, stage)
  state = state_lib.init(config, ts)
  batch = aot.synthetic_batch(config, sharding.batch_sharding(mesh))
  for _ in range(2):  # warm-up
    state, metrics = compiled(state, batch)
  dtype = config.model.dtype
  if dtype == "auto":  # resolved per backend (checkouts from medjax/models/precision.py on)
    from medjax.models import precision
    dtype = precision.compute_dtype(dtype).name
  print(json.dumps(dict(compile_seconds=compile_seconds, dtype=dtype,
                        loss=float(jax.device_get(metrics["loss"])))), flush=True)
  for line in sys.stdin:
    seconds = []
    for _ in range(int(line)):
      t0 = time.perf_counter()
      state, metrics = compiled(state, batch)
      jax.block_until_ready((state, metrics))
      seconds.append(time.perf_counter() - t0)
    print(json.dumps(dict(seconds=seconds)), flush=True)


if __name__ == "__main__":
  main(sys.argv)
