"""The TFDS builder all converters share: one schema-v2 record per study, patient-disjoint splits,
a leakage check, byte-reproducible shards and a manifest.

A converter subclasses `StudyBuilder` and implements `_scan(src) -> (studies, report)`: it parses
its layout into `Study` objects (no image decoding) and lists every row or file it cannot use in
`report["skipped"]` ({"reason", and "file"/"row"/"column"/"id" as known; "part": "view" or
"report" when only that part of a study was dropped and the study kept}). The base decodes and
checks each image, drops unusable studies (counted, with reasons), splits, checks leakage and
writes the records; `prepare` checks the options first, reads the whole source before writing
anything, writes the sampling index of each split and manifest.json beside the shards, and puts
the result in place without losing the dataset there before (medjax.data_prep.publish).
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path

import tensorflow_datasets as tfds
from tensorflow_datasets.core import writer as tfds_writer
from tensorflow_datasets.proto import tf_example_pb2

from medjax import contract, paths
from medjax.data_prep import entities, images as imaging, options, publish, schema, splits

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Study:
  study_id: str
  patient_id: str
  where: dict  # locates the study in the source for skip entries, e.g. {"file": ..., "row": 3}
  images: tuple = ()  # image file paths
  views: tuple = ()  # contract.VIEWS, one per image
  findings: str = ""
  impression: str = ""
  notes: str = ""
  labels: dict = dataclasses.field(default_factory=dict)  # contract.LABELS name -> code
  outcomes: dict = dataclasses.field(default_factory=dict)
  split: str | None = None  # the source's own split; None: hashed by patient


class _DeterministicWriter(tfds_writer.ExampleWriter):
  """TFDS serializes tf.train.Example with protobuf's default map order, which the upb backend
  varies from process to process; re-serializing with sorted keys makes shards reproducible."""

  def write(self, path, examples):
    parse = tf_example_pb2.Example.FromString
    canonical = ((key, parse(data).SerializeToString(deterministic=True)) for key, data in examples)
    return super().write(path, canonical)


class StudyBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Subclasses set SPLITS, DESCRIPTION, HOMEPAGE (SOURCE_KIND when `src` is a file) and
  implement `_scan`. Every dataset has the version of the record schema it holds
  (contract.DATASET_VERSION)."""

  VERSION = tfds.core.Version(contract.DATASET_VERSION)
  RELEASE_NOTES = contract.RELEASE_NOTES
  SPLITS = ("train", "validation")
  DESCRIPTION = HOMEPAGE = ""
  SOURCE_KIND = "dir"  # what `src` must be: "dir" or "file"
  # TFDS 4.9.10 finds a packaged builder's code through `importlib_resources`, a backport it
  # only installs on Python < 3.9; naming a file directly avoids that import.
  code_path = Path(__file__)

  def __init__(self, *, src=None, seed: int = 0, val_fraction: float = 0.15, max_side: int = 512,
               lexicon_dir: str | None = None, num_workers: int = 0,
               max_pixels: int = imaging.MAX_PIXELS, max_decoded_mb: int = imaging.MAX_DECODED_MB,
               **kwargs):
    options.check(seed=seed, val_fraction=val_fraction, max_side=max_side,
                  num_workers=num_workers, max_pixels=max_pixels, max_decoded_mb=max_decoded_mb)
    # src is None when TFDS only reads a prepared dataset (tfds.builder(name, data_dir=...)).
    self.src = Path(src).resolve() if src else None
    self.seed, self.val_fraction = seed, val_fraction
    self.max_side, self.lexicon_dir = max_side, lexicon_dir
    # What load_gray accepts of one image; sent with each job to the decoding processes.
    self.image_limits = dict(max_side=max_side, max_pixels=max_pixels,
                             max_decoded_mb=max_decoded_mb)
    self.num_workers = num_workers  # processes decoding images; the output does not depend on it
    self.report: dict = {}  # filled by `read_source`; `prepare` puts it in the manifest
    self._by_split: dict | None = None
    super().__init__(**{"file_format": "array_record", **kwargs})

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=self.DESCRIPTION,
                                 homepage=self.HOMEPAGE, features=schema.features())

  def _scan(self, src: Path) -> tuple[list[Study], dict]:
    raise NotImplementedError

  def split_rule(self) -> dict:
    return {"seed": self.seed, "val_fraction": self.val_fraction,
            "rule": "validation iff sha256(f'{seed}:{patient_id}')[:8] / 2**64 < val_fraction; "
                    "patients sharing an identical image are merged and hashed by their "
                    "smallest id"}

  def _split_generators(self, dl_manager):
    by_split = self.read_source() if self._by_split is None else self._by_split
    return {s: self._generate_examples(v) for s, v in by_split.items() if v}

  def read_source(self) -> dict[str, list[Study]]:
    """Parses the source, decodes every image once and splits: everything short of writing,
    so a source that cannot be converted fails before any file is written."""
    if self.src is None:
      raise ValueError(f"{self.name}: no source given (prepare(src, out) / --src)")
    studies, self.report = self._scan(self.src)
    skipped = self.report.setdefault("skipped", [])
    studies, hashes = self._check(studies, skipped)
    if not studies:
      raise ValueError(f"{self.src}: no usable study ({len(skipped)} skipped, e.g. "
                       f"{skipped[:3]})")
    by_split = {s: [] for s in self.SPLITS}
    if all(st.split for st in studies):  # the source's own patient-disjoint split
      for st in studies:
        by_split[st.split].append(st)
    else:
      group = splits.merge_patients(studies, hashes)
      for st in studies:
        split = splits.split_of(group[st.patient_id], self.seed, self.val_fraction)
        by_split[split].append(st)
      members = collections.defaultdict(list)
      for p, g in sorted(group.items()):
        members[g].append(p)
      self.report["merged_patients"] = [m for m in members.values() if len(m) > 1]
    splits.check_leakage(by_split, hashes)
    self._by_split = by_split
    return by_split

  def _check(self, studies: list[Study], skipped: list) -> tuple[list[Study], dict]:
    """Decodes every image once (pixel hashes for de-duplication and the leakage check); drops
    unreadable views, then studies with no image left, no text, no patient or a repeated id."""
    kept, hashes, first = [], {}, {}
    jobs = [(p, self.image_limits) for st in studies for p in st.images]
    probed = imaging.ordered_map(imaging.probe, jobs, self.num_workers)
    for st in studies:
      results = [next(probed) for _ in st.images]  # consumed for every study, in job order
      reason = None
      if not st.patient_id.strip():
        reason = "missing patient id"
      elif st.study_id in first:
        reason = f"duplicate study id (first at {first[st.study_id]})"
      if reason:
        skipped.append({**st.where, "id": st.study_id, "reason": reason})
        continue
      good, bad = [], []
      for path, view, (sha, error) in zip(st.images, st.views, results):
        if sha:
          good.append((path, view, sha))
        else:
          bad.append({**st.where, "file": self._relative(path), "id": st.study_id,
                      "reason": error})
      if st.images and not good:  # an imaging study without a readable image: skip it whole
        skipped.extend(bad if len(bad) == 1 else
                       [{**b, "reason": f"no readable image in study: {b['reason']}"} for b in bad])
        continue
      skipped.extend({**b, "part": "view", "reason": f"view dropped: {b['reason']}"} for b in bad)
      if not st.images and not any((st.findings, st.impression, st.notes)):
        skipped.append({**st.where, "id": st.study_id, "reason": "empty study: no image, no text"})
        continue
      first[st.study_id] = json.dumps(st.where)
      st.images, st.views = tuple(g[0] for g in good), tuple(g[1] for g in good)
      hashes[st.study_id] = tuple(g[2] for g in good)
      kept.append(st)
    return kept, hashes

  def _relative(self, path) -> str:
    path = Path(path)
    return str(path.relative_to(self.src)) if path.is_relative_to(self.src) else str(path)

  def _example_writer(self):
    return _DeterministicWriter(file_format=self.info.file_format)

  def _generate_examples(self, studies):
    encoded = imaging.ordered_map(imaging.encode_all, [(st.images, self.image_limits)
                                                       for st in studies], self.num_workers)
    for st, pngs in zip(studies, encoded):
      yield st.study_id, schema.record(
          source=self.name, patient_id=st.patient_id, study_id=st.study_id, images=pngs,
          views=st.views, findings=st.findings, impression=st.impression, notes=st.notes,
          labels=st.labels, outcomes=st.outcomes, lexicon_dir=self.lexicon_dir)


def sha256_file(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def check_paths(builder_cls, src, out_dir) -> dict[str, str]:
  """Argument -> what is wrong with it, for `src` and `out_dir` (empty when both are usable)."""
  problems = {"src": options.source_problem(src, builder_cls.SOURCE_KIND),
              "out": options.output_problem(out_dir)}
  dataset_dir = Path(out_dir).absolute() / builder_cls.name
  if not problems["src"] and Path(src).resolve().is_relative_to(dataset_dir.resolve()):
    problems["src"] = f"{src} lies inside {dataset_dir}, which the conversion replaces"
  return {k: v for k, v in problems.items() if v}


def prepare(builder_cls, src, out_dir, **kwargs) -> dict:
  """(Re)builds `builder_cls`'s dataset from `src` under TFDS `out_dir`; returns the manifest it
  writes beside the shards. Bad options or paths raise ValueError before anything is read; a
  conversion that fails leaves the dataset already in `out_dir` as it was."""
  problems = check_paths(builder_cls, src, out_dir)
  if problems:
    raise ValueError("; ".join(f"{k}: {v}" for k, v in problems.items()))
  out = Path(out_dir).absolute()
  staging = publish.staging_dir(out, builder_cls.name)
  builder = builder_cls(src=src, data_dir=str(staging), **kwargs)
  builder.read_source()
  final = out / builder.name / str(builder.version)
  with publish.locked(out, builder.name):
    try:
      builder.download_and_prepare(
          download_dir=str(staging / "downloads"), download_config=tfds.download.DownloadConfig(
              download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS))
      version_dir = Path(builder.data_dir)
      manifest = _manifest(builder, version_dir, staging)
      publish.carry_over(final, version_dir, manifest, {p.name for p in version_dir.iterdir()})
      paths.write_atomic(version_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
      publish.swap(version_dir, final)
    finally:
      shutil.rmtree(staging, ignore_errors=True)
  log.info("%s: %s records, %d skipped", final, {s: v["num_examples"]
                                                for s, v in manifest["splits"].items()},
           len(manifest["skipped"]))
  return manifest


def _manifest(builder: StudyBuilder, version_dir: Path, data_dir: Path) -> dict:
  counts = {}
  for s in builder.SPLITS:
    shards = sorted(version_dir.glob(f"{builder.name}-{s}.array_record-*"))
    counts[s] = {"num_examples": builder.info.splits[s].num_examples if shards else 0,
                 "shards": {p.name: sha256_file(p) for p in shards},
                 "shard_bytes": {p.name: p.stat().st_size for p in shards}}
    if shards:
      counts[s]["index"] = _write_index(builder.name, s, data_dir, version_dir)
  report = builder.report
  reasons = collections.Counter(item["reason"].split(":")[0] for item in report["skipped"])
  return {"name": builder.name, "version": str(builder.version),
          "schema_version": contract.SCHEMA_VERSION, "source_path": str(builder.src),
          **builder.image_limits, "split": builder.split_rule(), "splits": counts,
          "lexicon_sha256": entities.extractor(builder.lexicon_dir).lexicon.sha256(),
          "records": sum(v["num_examples"] for v in counts.values()),
          "skipped_by_reason": dict(sorted(reasons.items())), **report}


def _write_index(name: str, split: str, data_dir: Path, version_dir: Path) -> dict:
  """Writes the split's sampling index (medjax.contract.sampling_index) from its stored records,
  in their stored order (TFDS shuffles them while writing); returns its manifest entry."""
  rows = ((schema.text_feature(f, "patient_id"), schema.text_feature(f, "study_id"),
           len(f["images"].bytes_list.value) > 0,
           bool(contract.study_text({k: schema.text_feature(f, k) for k in contract.TEXT_FIELDS})))
          for f in schema.stored_features(data_dir, name, split))
  data = json.dumps(contract.sampling_index(rows), separators=(",", ":")).encode()
  file = contract.index_file(name, split)
  (version_dir / file).write_bytes(data)
  return {"file": file, "sha256": hashlib.sha256(data).hexdigest()}


def main(builder_cls, doc: str, argv=None, src_help: str = "source dir") -> dict:
  """The converters' shared CLI. Every flag is checked before any file is read or written (an
  error names the flag, exit code 2). Prints counts and skip reasons, never report text."""
  parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
  parser.add_argument("--src", required=True, help=src_help)
  parser.add_argument("--out", required=True, help="TFDS data_dir to write into")
  options.add_arguments(parser, options.CONVERTER)
  args = parser.parse_args(argv)
  for name, problem in check_paths(builder_cls, args.src, args.out).items():
    parser.error(f"argument --{name}: {problem}")
  logging.basicConfig(level=logging.INFO)
  manifest = prepare(builder_cls, args.src, args.out,
                     **{k: getattr(args, k) for k in options.CONVERTER})
  for item in manifest["skipped"]:
    where = ", ".join(f"{k} {v}" for k, v in item.items() if k != "reason")
    print(f"skipped ({where}): {item['reason']}")
  print(json.dumps({s: v["num_examples"] for s, v in manifest["splits"].items()}))
  return manifest
