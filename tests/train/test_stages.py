import json
import shutil

import jax
import numpy as np
import pytest

from medjax import sharding
from medjax.configs import base, medmllm_tiny, resolve
from medjax.train import loop as trainer, stages, state as state_lib, weights

import batches


def _config(**overrides):
  c = medmllm_tiny.get_config()
  c.update(overrides)
  return c


def test_no_stages_is_one_stage_with_the_config_weights():
  c = _config(total_steps=7)
  (only,) = stages.plan(c)
  assert (only.first, only.last) == (1, 7) and only.objectives.image_text.weight == 1.0


def test_stages_run_back_to_back_and_switch_the_other_objectives_off():
  c = _config(total_steps=9, stages=(dict(name="a", steps=4, weights=dict(mae=1.0)),
                                     dict(name="b", steps=5, weights=dict(mlm=0.5))))
  a, b = stages.plan(c)
  assert (a.first, a.last, b.first, b.last) == (1, 4, 5, 9)
  assert a.objectives.mae.weight == 1.0 and a.objectives.image_text.weight == 0.0
  assert b.objectives.mlm.weight == 0.5 and b.objectives.mae.weight == 0.0
  assert c.objectives.image_text.weight == 1.0  # the config itself is untouched
  assert stages.at([a, b], 4) is a and stages.at([a, b], 5) is b


def test_stage_errors_are_clear():
  with pytest.raises(ValueError, match="add up to 4 steps but total_steps=9"):
    stages.plan(_config(total_steps=9, stages=(dict(name="a", steps=4, weights=dict(mae=1.0)),)))
  with pytest.raises(ValueError, match="unknown objectives.*'mlmm'"):
    stages.plan(_config(total_steps=4, stages=(dict(name="a", steps=4, weights=dict(mlmm=1.0)),)))


def test_a_stage_may_read_its_own_sources():
  covid, mixed = (dict(name="covid_cxr"),), (dict(name="covid_cxr"), dict(name="iu_xray"))
  c = _config(total_steps=6, stages=(dict(name="a", steps=2, weights=dict(mae=1.0), sources=covid),
                                     dict(name="b", steps=2, weights=dict(mlm=1.0)),
                                     dict(name="c", steps=2, weights=dict(mae=1.0))))
  c.data.sources = mixed
  a, b, cc = plan = stages.plan(c)
  assert (a.sources, b.sources, cc.sources) == (covid, mixed, mixed)
  assert stages.data_config(c.data, a).sources == covid and c.data.sources == mixed
  # Stage a reads its own stream; b and c read the same sources, so one stream runs on.
  assert [stages.stream_start(plan, s) for s in range(1, 7)] == [1, 1, 3, 3, 3, 3]
  with pytest.raises(ValueError, match="unknown keys \\['source'\\]"):
    stages.plan(_config(total_steps=2, stages=(dict(name="a", steps=2, weights={}, source=covid),)))


def test_medmllm_recipe_covers_all_nine_objectives():
  c = base.get_config()
  c.stages, c.total_steps = base.medmllm_stages(1, 1, 1), 3
  trained = {name for s in stages.plan(c) for name, o in s.objectives.items() if o.weight}
  self_distillation = {"dino", "ibot", "koleo"}  # RAD-DINO's, not Med-MLLM's
  assert trained == set(c.objectives.keys()) - self_distillation and len(trained) == 9


def test_medmllm_s_recipe_and_its_ablation_arg():
  from medjax.configs import medmllm_s
  recipe = medmllm_s.get_config()
  assert sum(s["steps"] for s in recipe.stages) == recipe.total_steps
  image, text, _ = stages.plan(recipe)  # the image stage reads only the source with X-rays
  assert [s["name"] for s in image.sources] == ["covid_cxr"] and len(text.sources) == 3
  c = medmllm_s.get_config("only=image_level+patient_level,steps=200,sources=covid_cxr")
  (stage,) = stages.plan(c)
  assert (stage.first, stage.last, c.total_steps) == (1, 200, 200)
  assert {n for n, o in stage.objectives.items() if o.weight} == {"image_level", "patient_level"}
  assert [s["name"] for s in c.data.sources] == ["covid_cxr"]
  with pytest.raises(ValueError, match="unknown key 'step'"):
    medmllm_s.get_config("only=mae,step=200")


def _weights(stage) -> dict:
  return {n: o.weight for n, o in stage.objectives.items() if o.weight}


def test_medmllm_s_image_stage_with_self_distillation():
  from medjax.configs import medmllm_s
  recipe = resolve.resolved(medmllm_s.get_config())  # unchanged: no heads, crops or teacher
  assert recipe.model.dino_head.prototypes == 0 and recipe.data.local_crops == 0
  c = resolve.resolved(medmllm_s.get_config("only=dino+ibot,steps=1600,sources=covid_cxr"))
  (stage,) = stages.plan(c)
  assert _weights(stage) == {"dino": 1.0, "ibot": 1.0}
  assert (c.model.dino_head.prototypes, c.model.ibot_head.prototypes) == (4096, 4096)
  assert (c.data.local_crops, c.data.local_crop_size, c.data.ibot_mask_probability) == (6, 64,
                                                                                        0.5)
  assert c.objectives.dino.warmup_steps == c.objectives.ibot.warmup_steps == 480  # 30%
  assert c.data.crop_scale == recipe.data.crop_scale  # the same global crops as every recipe
  both = medmllm_s.get_config("only=image_level+patient_level+mae+dino+ibot+koleo,steps=50")
  assert _weights(stages.plan(both)[0]) == dict(image_level=1.0, patient_level=1.0, mae=1.0,
                                                dino=1.0, ibot=1.0, koleo=0.1)
  full = resolve.resolved(medmllm_s.get_config("image=image_level+patient_level+mae+dino+ibot"))
  image, text, joint = stages.plan(full)
  assert _weights(image) == dict(image_level=1.0, patient_level=1.0, mae=1.0, dino=1.0,
                                 ibot=1.0)
  assert (_weights(text), _weights(joint)) == tuple(_weights(s) for s in stages.plan(recipe)[1:])
  assert full.objectives.dino.warmup_steps == 90  # 30% of the 300-step image stage
  with pytest.raises(ValueError, match="image=... and image_steps=N set the full recipe"):
    medmllm_s.get_config("only=dino,steps=10,image=dino")


def test_flops_shares_sum_to_one(covid_data_dir):
  from medjax.data import pipeline
  c = _config(total_steps=2, stages=(dict(name="both", steps=2,
                                          weights=dict(image_text=1.0, mae=1.0)),))
  c.data.dir = str(covid_data_dir)
  c = resolve.resolved(c)
  ts = state_lib.setup(c, sharding.make_mesh(dict(data=1), jax.devices()[:1]))
  batch = next(pipeline.make_iterator(c.data, batch_size=c.batch_size, seed=0))
  (stage,) = stages.plan(c)
  shares = stages.flops_shares(ts.graphdef, stage, state_lib.init(c, ts)["params"], batch)
  assert set(shares) == {"image_text/flops_share", "mae/flops_share"}
  assert np.isclose(sum(shares.values()), 1.0) and min(shares.values()) > 0.05


def test_a_stage_trains_the_modules_its_objectives_read():
  """What the step keeps as it is (optimizer.keep_unread), per stage of Med-MLLM's recipe."""
  c = batches.config(batch_size=4)
  c.stages, c.total_steps = base.medmllm_stages(1, 1, 1), 3
  c = resolve.resolved(c)
  ts = state_lib.setup(c, sharding.make_mesh(dict(data=1), jax.devices()[:1]))
  params, batch = state_lib.init(c, ts)["params"], batches.random_batch(c)
  image, text, image_text = (stages.trained_modules(ts.graphdef, s, params, batch)
                             for s in stages.plan(c))
  assert "image" in image[0] and "text" in image[1]  # image_level, patient_level, mae
  assert "text" in text[0] and "image" in text[1] and "mae_decoder" in text[1]
  assert {"image", "text", "decoder"} <= set(image_text[0]) and "mae_decoder" in image_text[1]
  assert sorted(image[0] + image[1]) == sorted(params)


def test_staged_run_recompiles_per_stage_and_resumes_inside_a_stage(covid_data_dir, tmp_path):
  c = _config(total_steps=4, log_every=1, checkpoint_every=3, mesh=dict(data=1, fsdp=1, tensor=1),
              stages=(dict(name="image", steps=2, weights=dict(image_level=1.0, mae=1.0)),
                      dict(name="text", steps=2, weights=dict(mlm=1.0))))
  c.data.dir = str(covid_data_dir)
  history = trainer.train(c, str(tmp_path), devices=jax.devices()[:1])
  assert "image_level/loss" in history[0] and "mlm/loss" not in history[0]
  assert "mlm/loss" in history[2] and "mae/loss" not in history[2]
  assert [("compile_seconds" in h) for h in history] == [True, False, True, False]
  # The text stage leaves the image tower as the image stage left it: step 4 (a text step)
  # changes the text tower and not one image param (no momentum or weight decay drift).
  ts = state_lib.setup(c, sharding.make_mesh(dict(data=1), jax.devices()[:1]))
  at = {s: weights.load_params(str(tmp_path / "checkpoints" / str(s)),
                               ts.abstract_state["params"], ts.logical_specs) for s in (3, 4)}
  jax.tree.map(np.testing.assert_array_equal, at[3]["image"], at[4]["image"])
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(at[3]["text"]),
                                                       jax.tree.leaves(at[4]["text"])))
  shutil.rmtree(tmp_path / "checkpoints" / "4")  # as if preempted after step 3's save
  resumed = trainer.train(c, str(tmp_path), devices=jax.devices()[:1])
  assert [h["step"] for h in resumed] == [4] and "mlm/loss" in resumed[0]
  np.testing.assert_allclose(resumed[0]["loss"], history[3]["loss"], rtol=1e-6)


def _digests(workdir) -> dict:
  lines = (workdir / "batch_digests.jsonl").read_text().splitlines()
  return {d["step"]: d["sha256"] for d in map(json.loads, lines)}


def test_stage_on_other_sources_starts_its_own_stream_and_resumes_at_the_switch(real_data_dir,
                                                                                tmp_path):
  mixed = (dict(name="covid_cxr", weight=3.0), dict(name="ncbi_disease", weight=1.0))
  text = dict(name="text", steps=2, weights=dict(mlm=1.0))
  c = _config(total_steps=4, log_every=1, checkpoint_every=2, record_batch_digests=True,
              mesh=dict(data=1, fsdp=1, tensor=1),
              stages=(dict(name="image", steps=2, weights=dict(image_level=1.0),
                           sources=(dict(name="covid_cxr"),)), text))
  c.data.dir, c.data.sources = str(real_data_dir), mixed
  history = trainer.train(c, str(tmp_path / "staged"), devices=jax.devices()[:1])
  # The text stage's batches are those of a run that starts on the mixed sources.
  alone = _config(total_steps=2, record_batch_digests=True, mesh=c.mesh, stages=(text,))
  alone.data.dir, alone.data.sources = str(real_data_dir), mixed
  trainer.train(alone, str(tmp_path / "alone"), devices=jax.devices()[:1])
  staged = _digests(tmp_path / "staged")
  assert [staged[3], staged[4]] == list(_digests(tmp_path / "alone").values())
  # Preempted right after the image stage's last save: the text stage starts its stream afresh.
  shutil.rmtree(tmp_path / "staged" / "checkpoints" / "4")
  resumed = trainer.train(c, str(tmp_path / "staged"), devices=jax.devices()[:1])
  assert [h["step"] for h in resumed] == [3, 4]
  np.testing.assert_allclose([h["loss"] for h in resumed], [h["loss"] for h in history[2:]],
                             rtol=1e-6)
