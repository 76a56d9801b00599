"""Med-MLLM, tiny: what the tests and CI train. Seconds per run on one CPU.

  python data_prep/covid_cxr.py --src ../shared/data/covid-chestxray --out ~/medjax_data
  medjax-prepare tokenizer --data_dir ~/medjax_data
  medjax-train --config medmllm_tiny --workdir /tmp/medjax_tiny

Expected (2-core CPU): ~50 ms/step after a ~10 s compile; CLIP loss falls from ln(16)=2.77.
"""
from medjax.configs import base, common


def get_config(arg=None):
  common.parse_arg(arg)  # no args
  c = base.get_config()
  c.total_steps = 100
  c.batch_size = 16
  c.data.text_len = 64
  # float32 on every machine ("auto" would pick bf16 on AMX CPUs): what tests and CI train, so
  # their numbers do not depend on the CPU they run on.
  c.model.dtype = "float32"
  c.model.proj_dim = 32
  c.model.image.update(width=64, depth=2, heads=2, mlp_dim=128, patch_size=16, channels=1,
                       image_size=64)
  c.model.text.update(vocab_size=4096, width=64, depth=2, heads=2, mlp_dim=128, max_len=64)
  c.model.decoder = dict(width=64, depth=1, heads=2, mlp_dim=128, max_len=64)
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 5
  c.log_every = 10
  c.checkpoint_every = 50
  return c
