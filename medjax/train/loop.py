"""The trainer: pretrains Med-MLLM on a device mesh (one CPU, one GPU or a multi-host pod) by
config alone. `medjax-train` (medjax/cli/train.py), the tests and notebooks call `train`.

Sections, top to bottom: mesh, input pipeline, model & sharding, checkpoint/resume, update step,
train loop. Re-running with the same workdir resumes from its newest checkpoint.
"""
import hashlib
import json
import os
import time

import jax
import numpy as np
import tensorflow_datasets as tfds
import tqdm
from absl import logging

from medjax import sharding
from medjax.configs import resolve
from medjax.data import mixture, pipeline
from medjax.train import aot, checkpoint, optimizer, stages
from medjax.train import metrics as metrics_lib
from medjax.train import state as state_lib


def train(config, workdir: str, devices=None) -> list[dict]:
  """Runs `config` to `config.total_steps`; returns the logged metrics (one dict per log step)."""
  config = resolve.resolved(config)
  # ---------------------------------------------------------------------------------- Mesh --
  mesh = sharding.make_mesh(config.mesh, devices)
  replicas = mesh.shape["data"] * mesh.shape["fsdp"]
  if config.batch_size % replicas:
    raise ValueError(f"batch_size={config.batch_size} must divide by data x fsdp = {replicas}")
  logging.info("Mesh %s on %d process(es).", dict(mesh.shape), jax.process_count())

  # ------------------------------------------------------------------------ Input pipeline --
  data_cfg = config.data.copy_and_resolve_references()
  tokenizer = pipeline.load_tokenizer(data_cfg)
  data_cfg.tokenizer = str(pipeline.tokenizer_path(data_cfg))  # one for all stages' sources
  if tokenizer.vocab_size > config.model.text.vocab_size:
    raise ValueError(f"The tokenizer has {tokenizer.vocab_size} pieces, more than "
                     f"model.text.vocab_size={config.model.text.vocab_size}; raise it or "
                     "retrain the tokenizer.")
  schedule = stages.plan(config)  # a stage may read its own sources (medjax/train/stages.py)

  def stage_data(stage):
    return pipeline.make_iterator(stages.data_config(data_cfg, stage),
                                  batch_size=config.batch_size, seed=config.seed)

  batch_sharding = sharding.batch_sharding(mesh)

  def global_batch(local):  # this process's rows -> one array spanning all processes
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(batch_sharding, x),
                        local)

  # -------------------------------------------------------------------- Model and sharding --
  ts = state_lib.setup(config, mesh)
  unrolled = state_lib.setup(metrics_lib.unrolled(config), mesh)  # for FLOP counts (metrics.py)
  n_params = sum(x.size for x in jax.tree.leaves(ts.abstract_state["params"]))
  logging.info("Model: %.2fM params; %.1f MiB of train state per device.", n_params / 1e6,
               sharding.per_device_bytes(ts.abstract_state, ts.shardings) / 2**20)

  # ---------------------------------------------------------------- Checkpoint and resume --
  # Order: this workdir's newest checkpoint, else params from config.init_from, else init.
  ckpt = checkpoint.manager(workdir, config)
  meta = dict(config=config.to_dict(), tokenizer_sha256=tokenizer.sha256,
              data_sha256=_data_sha256(data_cfg, schedule))
  saved = ckpt.latest_step() or 0
  data_iter = stage_data(stages.at(schedule, min(saved + 1, config.total_steps)))
  # The data position is restored only if the saved stream goes on (not at a change of sources).
  state, start = checkpoint.restore_latest(
      ckpt, ts.abstract_state, data_iter if stages.same_stream(schedule, saved) else None, meta)
  if state is not None:
    logging.info("Resumed from step %d.", start)
  else:
    state = state_lib.init(config, ts)
    if config.init_from:
      state["params"] = checkpoint.load_params(config.init_from, ts.abstract_state["params"],
                                                ts.logical_specs)
      logging.info("Params from %s; optimizer and data start afresh.", config.init_from)

  # ------------------------------------------------------------------------- Update step --
  # One compiled step per stage (medjax/train/stages.py): the active objectives differ.
  def compile_stage(stage, state, batch):
    t0 = time.perf_counter()
    with jax.set_mesh(mesh):  # activation sharding constraints resolve against this mesh
      compiled = aot.train_step(ts, mesh, stage).lower(state, batch).compile()
      seconds = time.perf_counter() - t0
      shares = stages.flops_shares(unrolled.graphdef, stage, state["params"], batch)
    flops = aot.step_flops_per_device(config, mesh, stage)
    logging.info("Stage %s (steps %d-%d): compiled in %.1f s; %.3g FLOPs per device per step; "
                 "objectives %s.", stage.name, stage.first, stage.last, seconds, flops,
                 {k: f"{v:.0%}" for k, v in shares.items()})
    return compiled, flops, dict(shares, compile_seconds=seconds)

  # -------------------------------------------------------------------------- Train loop --
  writer = metrics_lib.MetricWriter(workdir)
  preemption = checkpoint.Preemption()
  digests = (open(os.path.join(workdir, f"batch_digests.{jax.process_index()}.jsonl"), "a")  # noqa: SIM115
             if config.record_batch_digests else None)
  lr = optimizer.schedule(config.optim, config.total_steps)
  history, window_start, window_steps, window_sum = [], time.perf_counter(), 0, None
  stage, compiled, flops, stage_scalars = None, None, 0.0, {}
  bar = tqdm.tqdm(total=config.total_steps, initial=start, desc="train", unit="step",
                  disable=None if jax.process_index() == 0 else True)
  try:
    for step in range(start + 1, config.total_steps + 1):
      new_stage = stage is None or step > stage.last
      if new_stage:
        previous, stage = stage, stages.at(schedule, step)
        if previous is not None and stage.sources != previous.sources:
          data_iter.close()  # its prefetch threads / worker processes
          data_iter = stage_data(stage)  # other sources: this stage's own stream
      local = next(data_iter)
      batch = global_batch(local)
      if digests:
        digests.write(json.dumps({"step": step, "sha256": _digest(local)}) + "\n")
      if new_stage:
        compiled, flops, stage_scalars = compile_stage(stage, state, batch)
        window_start, window_steps = time.perf_counter(), 0  # compiling is not a step
      state, step_metrics = compiled(state, batch)
      window_sum = step_metrics if window_steps == 0 else _add(window_sum, step_metrics)
      window_steps += 1
      bar.update(1)

      if step % config.log_every == 0 or step == config.total_steps:
        means = jax.device_get(window_sum)  # waits for the step: timings are honest
        means = {k: v / window_steps for k, v in means.items()}  # the window's mean, not one step
        means["skipped_steps"] = int(jax.device_get(step_metrics["skipped_steps"]))  # a count
        step_seconds = (time.perf_counter() - window_start) / window_steps
        scalars = dict(means, lr=lr(step - 1), step_seconds=step_seconds,
                       examples_per_second=config.batch_size / step_seconds,
                       mfu=metrics_lib.mfu(flops, step_seconds, config.peak_flops_per_device))
        scalars.update(stage_scalars)  # once per stage: compile time, objectives' FLOPs shares
        stage_scalars = {}
        writer.write(step, scalars)
        history.append(dict(scalars, step=step))
        bar.set_postfix(loss=f"{scalars['loss']:.4f}", mfu=f"{scalars['mfu']:.1%}")
        logging.info("step %d: loss %.4f, %.3f s/step, %.1f ex/s, MFU %.1f%%", step,
                     scalars["loss"], step_seconds, scalars["examples_per_second"],
                     100 * scalars["mfu"])
        nonfinite = int(jax.device_get(state["nonfinite_in_row"]))
        if nonfinite >= config.max_nonfinite_in_row:
          raise FloatingPointError(
              f"Step {step}: {nonfinite} non-finite losses/gradients in a row (updates skipped, "
              f"last good state in {workdir}/checkpoints). Lower optim.lr or check the data.")
        window_start, window_steps = time.perf_counter(), 0

      preempted = preemption.requested(step, config.log_every)
      if step % config.checkpoint_every == 0 or step == config.total_steps or preempted:
        checkpoint.save(ckpt, step, state, data_iter, meta)
      if preempted:
        break
  finally:  # also on errors: finish pending saves, restore the SIGTERM handler, flush logs
    preemption.close()
    bar.close()
    ckpt.wait_until_finished()
    ckpt.close()
    writer.close()
    if digests:
      digests.close()
  return history


@jax.jit
def _add(a, b):  # one dispatch per step to accumulate the log window's metrics on device
  return jax.tree.map(lambda x, y: x + y, a, b)


def _data_sha256(data_cfg, schedule) -> str:
  """Fingerprint of the prepared data: the manifests (shard hashes, split seed) of the sources
  of every stage. A missing or misnamed source fails here, before any step."""
  names = sorted({s["name"] for stage in schedule
                  for s in mixture.specs(stages.data_config(data_cfg, stage), "train")})
  h = hashlib.sha256()
  for name in names:
    version_dir = tfds.builder(name, data_dir=data_cfg.dir).data_dir
    with open(os.path.join(version_dir, "manifest.json"), "rb") as f:
      h.update(f.read())
  return h.hexdigest()


def _digest(batch: dict) -> str:
  h = hashlib.sha256()
  for key in sorted(batch):
    h.update(key.encode())
    h.update(np.ascontiguousarray(batch[key]).tobytes())
  return h.hexdigest()
