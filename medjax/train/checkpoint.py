"""Orbax checkpoints: train state + this process's data-iterator state + config, one step dir.

Arrays are written by Orbax's tensorstore-backed handlers and read back into the target
shardings (so a run can resume on another mesh); nothing is pickled.
"""
import grain
import orbax.checkpoint as ocp


def manager(workdir: str, config) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints,
                                         enable_async_checkpointing=True, create=True)
  return ocp.CheckpointManager(f"{workdir}/checkpoints", options=options,
                               item_names=("state", "data", "config"))


def save(mgr: ocp.CheckpointManager, step: int, state, data_iter, config) -> None:
  mgr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=grain.checkpoint.CheckpointSave(data_iter),
      config=ocp.args.JsonSave(config.to_dict())), force=True)


def restore_latest(mgr: ocp.CheckpointManager, abstract_state, data_iter):
  """(state, step) of the newest complete checkpoint, restored in place of `abstract_state`'s
  shardings; the data iterator is moved to where that step left it. (None, 0) if none."""
  step = mgr.latest_step()
  if step is None:
    return None, 0
  restored = mgr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data=grain.checkpoint.CheckpointRestore(data_iter)))
  return restored["state"], step
