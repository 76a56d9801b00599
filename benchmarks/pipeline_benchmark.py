"""Input pipeline throughput of a config beside its train step's consumption rate, as JSON.

  python -m benchmarks.pipeline_benchmark --config medmllm_s \
      [--config.data.dir DIR] [--workers 0,2] [--step_examples_per_second X]

For each worker count: examples/s of `make_iterator` at the config's global batch and image
size, the median of --windows windows of --window_batches batches, after --warmup_batches
(worker start-up and the first epoch's layout are not counted). The train step's rate comes
from benchmarks/step_benchmark.py's `run` on synthetic batches, or from
--step_examples_per_second when it was measured elsewhere. The pipeline keeps up when its rate
(on the host CPUs left over by the step) exceeds the step's.
"""
import json
import os
import statistics
import time

from absl import flags

# step_benchmark defines the --config and --steps flags this script shares (--sides unused).
from benchmarks import step_benchmark
from medjax.cli import common
from medjax.data import pipeline

flags.DEFINE_list("workers", ["0", str(os.cpu_count())], "Grain worker process counts to time.")
flags.DEFINE_integer("warmup_batches", 5, "Batches read before timing.")
flags.DEFINE_integer("windows", 5, "Timed windows; the median is reported.")
flags.DEFINE_integer("window_batches", 10, "Batches per timed window.")
flags.DEFINE_float("step_examples_per_second", None,
                   "Train-step rate measured elsewhere; unset = run step_benchmark here.")


def pipeline_rate(config, num_workers: int, *, warmup: int, windows: int, per_window: int):
  """Median examples/s of the training iterator with `num_workers` worker processes."""
  data_cfg = config.data.copy_and_resolve_references()
  data_cfg.num_workers = num_workers
  it = pipeline.make_iterator(data_cfg, batch_size=config.batch_size, seed=config.seed)
  try:
    t0 = time.perf_counter()
    for _ in range(warmup):
      next(it)
    warmup_seconds = time.perf_counter() - t0
    rates = []
    for _ in range(windows):
      t0 = time.perf_counter()
      for _ in range(per_window):
        next(it)
      rates.append(per_window * config.batch_size / (time.perf_counter() - t0))
  finally:
    it.close()
  return dict(num_workers=num_workers, examples_per_second_median=statistics.median(rates),
              examples_per_second_windows=[round(r, 1) for r in rates],
              warmup_seconds=round(warmup_seconds, 2))


def main(argv):
  del argv
  f = flags.FLAGS
  config = common.config()
  report = dict(batch_size=config.batch_size, image_size=config.data.image_size,
                text_len=config.data.text_len, cpu_count=os.cpu_count(),
                load_average_before=os.getloadavg())
  report["pipeline"] = [pipeline_rate(config, int(n), warmup=f.warmup_batches, windows=f.windows,
                                      per_window=f.window_batches) for n in f.workers]
  if f.step_examples_per_second is None:
    # The pipeline must keep up with the fastest stage (the one that consumes the most).
    step = step_benchmark.run(config, ["."], rounds=1, steps=f.steps)
    rates = {k: s["sides"]["."]["examples_per_second"] for k, s in step["stages"].items()}
    report["train_step"] = dict(source="benchmarks/step_benchmark.py run()",
                                examples_per_second=max(rates.values()), per_stage=rates)
  else:
    report["train_step"] = dict(source="--step_examples_per_second",
                                examples_per_second=f.step_examples_per_second)
  report["load_average_after"] = os.getloadavg()
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  common.run(main)
