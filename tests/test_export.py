"""Export: safetensors weights named per layer; serialized encoders that reproduce the model."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

from medjax import export, named_params, sharding
from medjax.configs import medmllm_tiny
from medjax.data import pipeline
from medjax.evals import report_generation
from medjax.train import loop as trainer, state as state_lib, weights


@pytest.fixture(scope="module")
def tiny():
  config = medmllm_tiny.get_config()
  ts = state_lib.setup(config, sharding.make_mesh(dict(data=1), jax.devices()[:1]))
  return config, ts


def test_named_weights_split_layers_and_round_trip(tiny):
  config, ts = tiny
  params = state_lib.init(config, ts)["params"]
  named = named_params.to_named(params, ts.logical_specs)
  depth = config.model.image.depth
  stacked = params["image"]["blocks"]["layers"]["mlp"]["up"]["kernel"]
  for i in range(depth):  # one tensor per layer, the layer index after `layers`
    np.testing.assert_array_equal(named[f"image.blocks.layers.{i}.mlp.up.kernel"], stacked[i])
  assert f"image.blocks.layers.{depth}.mlp.up.kernel" not in named
  assert named["image.stem.kernel"].shape == params["image"]["stem"]["kernel"].shape
  back = named_params.from_named(named, ts.abstract_state["params"], ts.logical_specs)
  jax.tree.map(np.testing.assert_array_equal, back, params)


def test_named_weights_name_what_does_not_fit(tiny):
  config, ts = tiny
  named = named_params.to_named(state_lib.init(config, ts)["params"], ts.logical_specs)
  abstract, specs = ts.abstract_state["params"], ts.logical_specs
  gone = "image.blocks.layers.1.mlp.up.kernel"
  with pytest.raises(ValueError, match=f"lack {gone}"):
    named_params.from_named({k: v for k, v in named.items() if k != gone}, abstract, specs)
  with pytest.raises(ValueError, match="image.stem.kernel: shape"):
    named_params.from_named({**named, "image.stem.kernel": np.zeros((3, 3), np.float32)},
                            abstract, specs)
  with pytest.raises(ValueError, match="extra.head.kernel"):
    named_params.from_named({**named, "extra.head.kernel": np.zeros(2, np.float32)},
                            abstract, specs)


def test_export_of_a_trained_run_reproduces_its_encoders(covid_data_dir, tmp_path):
  config = medmllm_tiny.get_config()
  config.data.dir = str(covid_data_dir)
  config.update(dict(total_steps=2, log_every=2, mesh=dict(data=1, fsdp=1, tensor=1)))
  trainer.train(config, str(tmp_path / "run"), devices=jax.devices()[:1])
  ts = state_lib.setup(config, sharding.make_mesh(dict(data=1), jax.devices()[:1]))
  params = weights.load_params(str(tmp_path / "run"), ts.abstract_state["params"],
                                   ts.logical_specs)
  out = str(tmp_path / "export")
  export.export(config, ts.graphdef, params, ts.logical_specs,
                str(pipeline.tokenizer_path(config.data)), out)

  # The safetensors file alone gives back the checkpoint's params, bit for bit.
  back = named_params.from_named(load_file(f"{out}/model.safetensors"), ts.abstract_state["params"],
                           ts.logical_specs)
  jax.tree.map(np.testing.assert_array_equal, back, params)
  spec = json.load(open(f"{out}/config.json"))
  assert spec["preprocess"]["image_size"] == 64 and spec["model"]["image"]["depth"] == 2
  assert open(f"{out}/tokenizer.model", "rb").read() == \
      pipeline.tokenizer_path(config.data).read_bytes()
  # Reloaded encoders equal the model at other batch sizes (the batch axis is symbolic) and
  # were lowered for the accelerators too; the report generator gives medjax's greedy tokens.
  model = nnx.merge(ts.graphdef, params)
  for batch in (1, 3):
    gaps = export.round_trip_gaps(out, model, batch=batch, seed=batch)
    assert set(gaps) == set(export.SERVING) and max(gaps.values()) < 1e-5, gaps
  _, fns, _ = export.load(out)
  assert all(set(fn.platforms) == set(export.PLATFORMS) for fn in fns.values())

  # The generator runs with jax and safetensors alone (medjax cannot be imported) and writes
  # exactly the tokens of medjax's own greedy decoding, on real X-rays.
  images = report_generation.paired_rows(config, "covid_cxr", "validation").images[:4]
  np.save(tmp_path / "images.npy", images)
  code = (f"import sys; sys.modules['medjax'] = None\n"
          "import jax, numpy as np; from safetensors.numpy import load_file\n"
          f"d = {out!r}\n"
          "fn = jax.export.deserialize(open(d + '/report_generator.jax', 'rb').read())\n"
          "ids = fn.call(load_file(d + '/model.safetensors'), np.load(sys.argv[1]))\n"
          "np.save(sys.argv[2], np.asarray(ids))\n")
  subprocess.run([sys.executable, "-c", code, str(tmp_path / "images.npy"),
                  str(tmp_path / "ids.npy")], check=True, cwd=tmp_path, timeout=300,
                 env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
  ids = np.load(tmp_path / "ids.npy")
  want = report_generation.generate(ts.graphdef, params, images,
                                    pipeline.load_tokenizer(config.data), config.data.text_len)
  assert ids.shape == (4, config.data.text_len) and ids.dtype == np.int32
  np.testing.assert_array_equal(ids, want)
