"""Input startup at MIMIC-CXR scale: seconds and peak memory from `make_iterator` to the first
batch on synthetic datasets of 40k, 100k and 400k records, as JSON.

  python -m benchmarks.startup_benchmark [--cache_dir DIR] [--scan_sizes 40000]

The records are written once (cached in --cache_dir) by data_prep's own machinery: `prepare` of
a StudyBuilder (patient-hash leakage check, TFDS ArrayRecord shards, sampling indexes, manifest),
only the images are not decoded from files but drawn from a pool of tiny PNGs. One split per
size, each with MIMIC-CXR's structure: patients with 1-10 studies (mean ~3.5), 1-3 views per
study (mean ~1.7), a report on 90% of studies. Building all 540k records takes minutes, once.

Each measurement runs in a fresh process (its peak RSS is the startup's own), with the base
config's data section (batch 256, 224 px, 128 tokens): `cold` with an empty shard-hash cache
(every shard is hashed), `warm` with the cache the cold run left. For --scan_sizes the old
startup (reading every record to index it, `mixture.scan`) is timed too. Files are in the page
cache (they were just written or read): a cold disk or a cloud bucket adds its read time.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = (40_000, 100_000, 400_000)
# Invented sentences: no real patient text.
FINDINGS = ("Heart size is normal.", "No pleural effusion.", "Mild cardiomegaly.",
            "Lungs are clear.", "Patchy opacities in both bases.", "No pneumothorax.",
            "Small left effusion.", "A 1.5 cm nodule in the right upper lobe.",
            "Interval improvement of the consolidation.", "Stable appearance since the prior.")
IMPRESSIONS = ("No acute process.", "Mild pulmonary edema.", "Possible pneumonia.",
               "Cardiomegaly without edema.")
INDICATIONS = ("Cough and fever.", "Shortness of breath.", "Chest pain.", "Follow-up.")


def _builder_cls():
  """The synthetic builder (defined on first use: importing medjax.data_prep loads TFDS)."""
  import io

  from PIL import Image

  from medjax.data_prep import builder, schema

  rng = np.random.default_rng(0)
  pool = []
  for _ in range(256):  # distinct 32 x 32 grayscale X-ray stand-ins, ~1.1 KB each
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), "L").save(buf, format="PNG")
    pool.append(buf.getvalue())

  class StartupSynthetic(builder.StudyBuilder):
    """One split per size; Study.images holds indexes into the PNG pool, not file paths."""

    SPLITS = tuple(f"n{n}" for n in SIZES)
    DESCRIPTION = "Synthetic records in MIMIC-CXR's structure (benchmarks/startup_benchmark.py)."

    def split_rule(self) -> dict:
      return {"rule": "one split per size, patients disjoint by construction"}

    def _scan(self, src):
      studies = [st for n in SIZES for st in _studies(n)]
      return studies, {"rows_read": len(studies), "skipped": []}

    def _check(self, studies, skipped):  # nothing to decode: the images come from the pool
      return studies, {st.study_id: () for st in studies}

    def _generate_examples(self, studies):
      for st in studies:
        yield st.study_id, schema.record(
            source=self.name, patient_id=st.patient_id, study_id=st.study_id,
            images=[pool[i] for i in st.images], views=st.views, findings=st.findings,
            impression=st.impression, notes=st.notes)

  def _studies(n: int):
    rng = np.random.default_rng(n)
    out, patient = [], 0
    while len(out) < n:
      for _ in range(min(int(rng.geometric(1 / 3.5)), 10, n - len(out))):
        views = int(rng.choice([1, 2, 3], p=[0.45, 0.45, 0.1]))
        report = rng.random() < 0.9
        out.append(builder.Study(
            study_id=f"n{n}-s{len(out)}", patient_id=f"n{n}-p{patient}", where={},
            images=tuple(int(i) for i in rng.integers(0, len(pool), views)),
            views=("PA", "LATERAL", "AP")[:views],
            findings=" ".join(rng.choice(FINDINGS, 2, replace=False)) if report else "",
            impression=str(rng.choice(IMPRESSIONS)) if report else "",
            notes=str(rng.choice(INDICATIONS)), split=f"n{n}"))
      patient += 1
    return out

  return StartupSynthetic


def build(cache_dir: Path) -> Path:
  """The TFDS data_dir with the synthetic dataset and a tokenizer, built on first use."""
  data_dir = cache_dir / "tfds"
  version_dir = data_dir / "startup_synthetic" / "2.0.0"
  if not (version_dir / "tokenizer.model").is_file():
    from medjax import paths
    from medjax.data_prep import builder, tokenizer
    (cache_dir / "src").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    builder.prepare(_builder_cls(), cache_dir / "src", data_dir)
    model = tokenizer.train_model(list(FINDINGS + IMPRESSIONS + INDICATIONS) * 4, 200)
    paths.write_atomic(version_dir / "tokenizer.model", model)
    print(f"built {sum(SIZES)} records in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
  return data_dir


def measure(data_dir: str, size: int, scan: bool) -> dict:
  """In this (fresh) process: startup to the first batch, and its peak RSS."""
  rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # MiB
  from medjax.configs import base, resolve
  from medjax.data import mixture, pipeline
  config = base.get_config()
  config.data.update(dir=data_dir, name="startup_synthetic")
  data_cfg = resolve.resolved(config).data
  out = {"records": size, "peak_rss_mib_after_imports": round(rss())}
  t0 = time.perf_counter()
  (source,) = mixture.open_sources(data_cfg, f"n{size}")
  out["open_seconds"] = round(time.perf_counter() - t0, 2)  # shards verified, index read
  it = pipeline.from_sources(data_cfg, [source], pipeline.load_tokenizer(data_cfg),
                             batch_size=config.batch_size, seed=0)
  out["iterator_seconds"] = round(time.perf_counter() - t0, 2)  # + sampler, transforms
  batch = next(it)  # + the first epoch's order and one batch of decoded, augmented rows
  out["first_batch_seconds"] = round(time.perf_counter() - t0, 2)
  it.close()
  out["batch_rows"] = len(batch["patient"])
  out["peak_rss_mib"] = round(rss())
  if scan:
    t0 = time.perf_counter()
    mixture.scan(mixture.Source(source.name, source.records))
    out["full_scan_seconds"] = round(time.perf_counter() - t0, 2)
  return out


def _child(data_dir: Path, size: int, hash_cache: str, scan: bool) -> dict:
  env = {**os.environ, "MEDJAX_CACHE_DIR": hash_cache}
  done = subprocess.run([sys.executable, "-m", "benchmarks.startup_benchmark", "--measure",
                         str(size), "--data_dir", str(data_dir)] + ["--scan"] * scan,
                        env=env, capture_output=True, text=True, check=True)
  return json.loads(done.stdout.splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cache_dir", default=os.path.expanduser(
      "~/.cache/medjax/startup_benchmark"), help="where the synthetic dataset is kept")
  parser.add_argument("--scan_sizes", default="40000",
                      help="sizes whose full-scan startup (the old way) is timed too")
  parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)  # a child's one run
  parser.add_argument("--data_dir", help=argparse.SUPPRESS)
  parser.add_argument("--scan", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.measure:
    print(json.dumps(measure(args.data_dir, args.measure, args.scan)))
    return
  data_dir = build(Path(args.cache_dir))
  scan_sizes = {int(s) for s in args.scan_sizes.split(",") if s}
  report = {"cpu_count": os.cpu_count(), "load_average_before": os.getloadavg(), "runs": []}
  for size in SIZES:
    with tempfile.TemporaryDirectory() as hash_cache:
      cold = _child(data_dir, size, hash_cache, size in scan_sizes)
      warm = _child(data_dir, size, hash_cache, False)
    report["runs"].append({"records": size, "cold": cold, "warm": warm})
  report["load_average_after"] = os.getloadavg()
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  main()
