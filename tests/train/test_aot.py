"""Ahead-of-time compilation: large configs are checked for memory without training them."""
import jax

from medjax import sharding
from medjax.configs import medmllm_l, medmllm_tiny, rad_dino, resolve
from medjax.data import pipeline
from medjax.train import aot


def test_abstract_batch_matches_the_real_pipeline(covid_data_dir):
  config = medmllm_tiny.get_config()
  config.data.dir = str(covid_data_dir)
  config = resolve.resolved(config)
  real = next(pipeline.make_iterator(config.data, batch_size=config.batch_size, seed=0))
  spec = aot.abstract_batch(config)
  assert set(real) == set(spec)
  for key in spec:
    assert (real[key].shape, real[key].dtype) == (spec[key].shape, spec[key].dtype), key


def test_medmllm_l_fits_one_eighth_per_device():
  """The pod config (~0.9B params) compiles on a data=1 x fsdp=8 fake mesh, and each device
  holds about 1/8 of the params and of the optimizer state."""
  config = medmllm_l.get_config()
  config.batch_size = 16
  config.mesh = dict(data=1, fsdp=8, tensor=1)
  # One compile with all nine objectives at once: a superset of every stage's step (not the
  # self-distillation ones, which medmllm_l does not train).
  config.stages = ()
  for name, objective in config.objectives.items():
    objective.weight = float(name not in rad_dino.SELF_DISTILLATION)
  assert jax.device_count() == 8
  report = aot.memory_report(config, sharding.make_mesh(config.mesh))
  assert 0.8e9 < report["params"] < 1.0e9, report["params"]
  for part in ("params", "opt"):
    share = report[f"{part}_bytes_per_device"] / report[f"{part}_bytes_total"]
    assert 1 / 8 <= share < 1.1 / 8, (part, share)
  # XLA agrees: the step's inputs per device are the state shard plus a batch shard.
  state_shard = report["params_bytes_per_device"] + report["opt_bytes_per_device"]
  for stage in report["stages"].values():
    assert state_shard <= stage["xla_argument_bytes"] < 1.2 * state_shard


def _mlm_step_temp_bytes(per_device: int, devices: int) -> int:
  config = medmllm_tiny.get_config()
  config.model.dtype = "bfloat16"  # the pod configs' compute dtype
  config.batch_size = per_device * devices
  config.mesh = dict(data=1, fsdp=devices, tensor=1)
  config.stages = ()
  for name, objective in config.objectives.items():
    objective.weight = float(name == "mlm")  # a vocabulary-wide head and every dense layer
  compiled, _, _ = aot.compile_train_step(
      config, sharding.make_mesh(config.mesh, jax.devices()[:devices]))
  return compiled.memory_analysis().temp_size_in_bytes


def test_temporaries_per_device_follow_the_per_device_batch():
  """8 devices with 8 examples each need no more XLA temporaries than 1 device with 8: nothing of
  the global batch is gathered onto a device. (The bf16 weight gradient's transposed copy of its
  activations once did: 4x here, ~17 GB per device for medmllm_l's 32k-vocabulary logits.)"""
  one, eight = _mlm_step_temp_bytes(8, 1), _mlm_step_temp_bytes(8, 8)
  assert eight < 1.2 * one, (one, eight)
