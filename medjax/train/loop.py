"""The trainer: pretrains Med-MLLM on a device mesh (one CPU, one GPU or a multi-host pod) by
config alone. `medjax-train` (medjax/cli/train.py), the tests and notebooks call `train`.

Sections, top to bottom: mesh, input, model & sharding, checkpoint & resume, evaluators, update
step, loop. Re-running with the same workdir resumes from its newest complete checkpoint, on
any mesh and any number of processes. Every process runs this same code; process 0 alone
writes metrics, TensorBoard events and the progress bar.
"""
from __future__ import annotations

import hashlib
import time

import jax
import tensorflow_datasets as tfds
import tqdm
from absl import logging

from medjax import evaluators, paths, sharding
from medjax.configs import resolve
from medjax.data import mixture, pipeline
from medjax.models import precision
from medjax.train import (
  aot,
  checkpoint,
  feed,
  metrics as metrics_lib,
  optimizer,
  peak as peak_lib,
  preemption,
  processes,
  stages,
  state as state_lib,
  summary as summary_lib,
  weights,
)


def train(config, workdir, devices=None) -> list[dict]:
  """Runs `config` to `config.total_steps` in `workdir` (a local path or a cloud URL); returns
  the rows it logged (one dict per log step, evaluator results included)."""
  config = resolve.resolved(config)
  # A multi-process run is watched from here to its end, not from the first step: the processes
  # leave jax.distributed's start together, but one may finish its init compile, restore and
  # step-0 evaluation many seconds before a loaded peer, which is not lost for that.
  with processes.Watchdog(config.timeouts.lost_process_seconds):
    return _train(config, paths.path(workdir), devices)


def _train(config, workdir, devices) -> list[dict]:
  main = jax.process_index() == 0

  # ---------------------------------------------------------------------------------- Mesh --
  mesh = sharding.make_mesh(config.mesh, devices)
  replicas = mesh.shape["data"] * mesh.shape["fsdp"]
  if config.batch_size % replicas:
    raise ValueError(f"config.batch_size={config.batch_size} must divide by data x fsdp = "
                     f"{replicas} (mesh {dict(mesh.shape)})")
  logging.info("Mesh %s on %d process(es).", dict(mesh.shape), jax.process_count())

  # --------------------------------------------------------------------------------- Input --
  data_cfg = config.data.copy_and_resolve_references()
  tokenizer = pipeline.load_tokenizer(data_cfg)
  data_cfg.tokenizer = str(pipeline.tokenizer_path(data_cfg))  # one for all stages' sources
  if tokenizer.vocab_size > config.model.text.vocab_size:
    raise ValueError(f"The tokenizer has {tokenizer.vocab_size} pieces, more than "
                     f"config.model.text.vocab_size={config.model.text.vocab_size}; raise it or "
                     "retrain the tokenizer.")
  schedule = stages.plan(config)  # a stage may read its own sources (medjax/train/stages.py)

  # -------------------------------------------------------------------- Model and sharding --
  ts = state_lib.setup(config, mesh)
  n_params = sum(x.size for x in jax.tree.leaves(ts.abstract_state["params"]))
  logging.info("Model: %.2fM params; %.1f MiB of train state per device.", n_params / 1e6,
               sharding.per_device_bytes(ts.abstract_state, ts.shardings) / 2**20)
  peak = peak_lib.per_device(config.peak_flops_per_device,
                             precision.compute_dtype(config.model.dtype, mesh.devices.flat[0]),
                             mesh.devices.flat)  # MFU's denominator; None: no MFU logged

  # ---------------------------------------------------------------- Checkpoint and resume --
  # Order: this workdir's newest complete checkpoint, else params from config.init_from, else
  # a fresh init. The data position is the step (medjax/train/feed.py).
  ckpt = checkpoint.manager(workdir, config)
  meta = dict(config=config.to_dict(), tokenizer_sha256=tokenizer.sha256,
              data_sha256=_data_sha256(data_cfg, schedule))
  state, start, _ = checkpoint.restore_latest(ckpt, ts.abstract_state, meta)
  if state is not None:
    logging.info("Resumed from step %d of %s.", start, ckpt.directory)
  else:
    state = state_lib.init(config, ts)
    if config.init_from:
      state["params"] = weights.load_params(config.init_from, ts.abstract_state["params"],
                                            ts.logical_specs, allow_cast=config.init_from_cast,
                                            config=config, params=state["params"])
      logging.info("Params from %s; optimizer and data start afresh.", config.init_from)

  # ---------------------------------------------------------------------------- Evaluators --
  # Chosen by name in config.evals (medjax/evaluators); each runs every `every` steps on the
  # current params, at the start of a fresh run, and at the end.
  evals = evaluators.build(config, mesh, ts)

  def evaluate(step, stage, every_one=False):
    out = {}
    for ev in evals:
      if not (every_one or step % ev.every == 0):
        continue
      t0 = time.perf_counter()
      out.update(ev.run(state, stage))
      logging.info("Evaluator %s at step %d: %.1f s.", ev.name, step, time.perf_counter() - t0)
    return out

  # ------------------------------------------------------------------------- Update step --
  # One compiled step per stage (medjax/train/stages.py): the active objectives differ.
  def compile_stage(stage, state, batch):
    t0 = time.perf_counter()
    with jax.set_mesh(mesh):  # activation sharding constraints resolve against this mesh
      compiled = aot.train_step(ts, mesh, stage).lower(state, batch).compile()
      seconds = time.perf_counter() - t0
      shares = stages.flops_shares(ts.graphdef, stage, state["params"], batch)
      trained, kept = stages.trained_modules(ts.graphdef, stage, state["params"], batch)
    flops = aot.step_flops_per_device(config, mesh, stage)
    logging.info("Stage %s (steps %d-%d): compiled in %.1f s; %.3g FLOPs per device per step; "
                 "objectives %s; trains %s; keeps %s unchanged.", stage.name, stage.first,
                 stage.last, seconds, flops, {k: f"{v:.0%}" for k, v in shares.items()},
                 " + ".join(trained), " + ".join(kept) or "nothing")
    return compiled, flops, dict(shares, compile_seconds=seconds)

  # ---------------------------------------------------------------------------------- Loop --
  writer = metrics_lib.MetricWriter(workdir, resumed=start)
  batches = feed.Feed(config, data_cfg, schedule, mesh, workdir=workdir)
  lr = optimizer.schedule(config.optim, config.total_steps)
  wait = config.timeouts.checkpoint_seconds
  history, window, stage, compiled, flops, stage_scalars = [], None, None, None, 0.0, {}
  if start == 0 and evals:
    row = evaluate(0, schedule[0], every_one=True)
    writer.write(0, row)
    history.append(dict(row, step=0))
  bar = tqdm.tqdm(total=config.total_steps, initial=start, desc="train", unit="step",
                  disable=None if main else True)
  stop = preemption.StopRequests(lambda: _newest_complete(ckpt))
  try:
    with stop:
      for step in range(start + 1, config.total_steps + 1):
        batch = batches.next(step)  # and the next step's batch starts building
        if stage is None or step > stage.last:
          stage = stages.at(schedule, step)
          compiled, flops, stage_scalars = compile_stage(stage, state, batch)
          window = None  # compiling is not a step
        if window is None:
          window = _Window()
        state, step_metrics = compiled(state, batch)  # dispatched; runs while the host goes on
        window.add(step_metrics)
        bar.update(1)

        if step % config.log_every == 0 or step == config.total_steps:
          scalars = window.means()  # waits for the step: timings are honest
          scalars.update(lr=lr(step - 1), examples_per_second=config.batch_size /
                         scalars["step_seconds"],
                         **stage_scalars)  # once per stage: compile time, FLOPs shares
          if peak:
            scalars["mfu"] = metrics_lib.mfu(flops, scalars["step_seconds"], peak)
          stage_scalars = {}
          scalars.update(evaluate(step, stage, every_one=step == config.total_steps))
          writer.write(step, scalars)
          history.append(dict(scalars, step=step))
          mfu = f"{scalars['mfu']:.1%}" if "mfu" in scalars else "n/a"
          bar.set_postfix(loss=f"{scalars['loss']:.4f}", mfu=mfu)
          logging.info("step %d: loss %.4f, %.3f s/step, %.1f ex/s, MFU %s", step,
                       scalars["loss"], scalars["step_seconds"],
                       scalars["examples_per_second"], mfu)
          nonfinite = int(jax.device_get(state["nonfinite_in_row"]))
          if nonfinite >= config.max_nonfinite_in_row:
            raise FloatingPointError(
                f"Step {step}: {nonfinite} non-finite losses or gradients in a row (each update "
                f"skipped, so the params are those of step {step - nonfinite}; "
                f"{_newest_complete(ckpt)}). Check the data and config.optim.lr.")
          window = _Window()

        stopping = stop.requested(step)
        if step % config.checkpoint_every == 0 or step == config.total_steps or stopping:
          checkpoint.save(ckpt, step, state, dict(meta, data=dict(
              stream_start=stages.stream_start(schedule, step), step=step)))
        if stopping:
          break
      checkpoint.finish(ckpt, wait)
  finally:  # also on errors: bounded waits for pending saves, files closed
    bar.close()
    batches.close()
    writer.close()
    try:
      preemption.bounded(ckpt.close, wait, "closing the checkpoint manager")
    except Exception as e:  # the original error, if any, is the one that matters
      logging.error("Checkpoints: %s", e)
  if main:
    print(summary_lib.report(workdir), flush=True)
  return history


class _Window:
  """The log window's metrics: summed on the device (one dispatch per step, no host sync)."""

  def __init__(self):
    self.start, self.steps, self.sums, self.last = time.perf_counter(), 0, None, None

  def add(self, metrics: dict) -> None:
    self.sums = metrics if self.sums is None else _add(self.sums, metrics)
    self.steps, self.last = self.steps + 1, metrics

  def means(self) -> dict:
    sums, last = jax.device_get((self.sums, self.last))
    out = {k: float(v) / self.steps for k, v in sums.items()}  # the window's mean, not a step's
    out["skipped_steps"] = int(last["skipped_steps"])  # a running count
    out["step_seconds"] = (time.perf_counter() - self.start) / self.steps
    return out


@jax.jit
def _add(a, b):
  return jax.tree.map(lambda x, y: x + y, a, b)


def _newest_complete(ckpt) -> str:
  step = ckpt.latest_step()
  return (f"the newest complete checkpoint is step {step} in {ckpt.directory}" if step else
          f"no complete checkpoint in {ckpt.directory} yet")


def _data_sha256(data_cfg, schedule) -> str:
  """Fingerprint of the prepared data: the manifests (shard hashes, split seed) of the sources
  of every stage. A missing or misnamed source fails here, before any step."""
  names = sorted({s["name"] for stage in schedule
                  for s in mixture.specs(stages.data_config(data_cfg, stage), "train")})
  h = hashlib.sha256()
  for name in names:
    version_dir = paths.path(tfds.builder(name, data_dir=data_cfg.dir).data_dir)
    h.update((version_dir / "manifest.json").read_bytes())
  return h.hexdigest()
