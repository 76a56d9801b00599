"""FLOP counting for MFU: every block of a scanned stack counts, and the count is the mesh's."""
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from medjax import sharding
from medjax.configs import medmllm_tiny
from medjax.models import layers, vit
from medjax.train import aot, metrics, stages


def _vit_forward_flops(depth: int, batch: int, width: int, mlp: int, tokens: int,
                       scan: bool = True) -> float:
  tower = vit.ViT(width, depth, heads=2, mlp_dim=mlp, patch_size=16, channels=1,
                  stack=layers.StackOptions(scan=scan), rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(tower)
  side = 16 * int(tokens ** 0.5)
  images = jax.ShapeDtypeStruct((batch, side, side, 1), jnp.float32)
  return metrics.model_flops(lambda p, x: nnx.merge(graphdef, p)(x)[1], params, images)


def test_model_flops_counts_every_block_of_a_scanned_stack():
  """A block's FLOPs, as the difference of two depths, are the matmuls counted by hand, and a
  scanned depth-6 stack costs 5 more blocks than depth 1, as much as the unrolled one: XLA's own
  count of the compiled scan would see one block at any depth."""
  b, d, m, n = 4, 64, 128, 16  # images, width, MLP width, patches per image
  one, two, six = (_vit_forward_flops(depth, b, d, m, n) for depth in (1, 2, 6))
  block = two - one
  matmuls = 2 * b * n * (4 * d * d + 2 * d * m) + 2 * 2 * b * n * n * d  # projections + attention
  assert block == matmuls
  assert six - one == 5 * block
  assert _vit_forward_flops(6, b, d, m, n, scan=False) == six


def test_step_flops_per_device_splits_the_same_step_over_the_mesh():
  """The count is of the whole step, whatever the mesh: 8 devices each get 1/8 of it."""
  config = medmllm_tiny.get_config()
  config.objectives.image_level.weight = 1.0
  per_device = {}
  for shape, devices in ((dict(data=1), jax.devices()[:1]), (dict(data=2, fsdp=4), jax.devices())):
    mesh = sharding.make_mesh(shape, devices)
    per_device[mesh.size] = aot.step_flops_per_device(config, mesh, stages.plan(config)[0])
  assert per_device[1] > 0
  assert per_device[8] * 8 == pytest.approx(per_device[1], rel=1e-9)



def test_evaluator_keys_take_a_later_stages_val_losses_and_no_training_figure():
  rows = [{"step": 0, "val/mae/loss": 1.6, "probe/auroc": 0.6},
          {"step": 10, "mae/loss": 1.5, "loss": 1.5, "image_text/i2t_top1": 0.1},
          {"step": 20, "val/mlm/loss": 7.0, "mlm/loss": 8.0}]  # the text stage starts at 11
  assert metrics.evaluator_keys(rows) == {"val/mae/loss", "probe/auroc", "val/mlm/loss"}
  assert metrics.evaluator_keys(rows[1:]) == set()  # no step 0 logged: no evaluator ran
