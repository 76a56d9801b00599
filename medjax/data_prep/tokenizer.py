"""Trains the sentencepiece tokenizer on the text of one or more prepared datasets' TRAIN splits.

Writes `tokenizer.model` into the version dir of the first dataset named (where the pipeline
looks by default: beside its first source) and records it in that manifest.json. Single threaded
with a fixed seed: the same corpus always gives the same model bytes.

  medjax-prepare tokenizer --data_dir DIR [--name covid_cxr [--name iu_xray ...]]
      [--vocab_size 4000]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
from pathlib import Path

import sentencepiece as spm
import tensorflow_datasets as tfds

from medjax import paths
from medjax.contract import DATASET_VERSION, MASK, SPECIAL_IDS, TEXT_FIELDS
from medjax.data_prep import options, publish, schema


def train_texts(data_dir, name: str) -> list[str]:
  """Non-empty text fields of the train split, de-duplicated in order: notes are often repeated
  for every image of a patient and would otherwise be over-weighted."""
  records = schema.stored_features(data_dir, name, "train")
  texts = (schema.text_feature(f, k).strip() for f in records for k in TEXT_FIELDS)
  return list(dict.fromkeys(t for t in texts if t))


def _devnull_for_stderr():
  """Where the sentencepiece trainer's ~100 lines of progress go: /dev/null, when stderr is a
  file descriptor it can redirect; None (progress stays visible) in a notebook kernel, whose
  stderr has none."""
  try:
    sys.stderr.fileno()
  except (AttributeError, io.UnsupportedOperation):
    return None
  return open(os.devnull, "w")


def train_model(texts: list[str], vocab_size: int) -> bytes:
  """Unigram model bytes; single-threaded with a fixed seed so the same corpus gives the same
  model bytes."""
  spm.set_random_generator_seed(0)
  model = io.BytesIO()
  quiet = _devnull_for_stderr()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, logstream=quiet,
        model_type="unigram", vocab_size=vocab_size, hard_vocab_limit=False,
        character_coverage=1.0, max_sentence_length=1 << 16, num_threads=1,
        user_defined_symbols=[MASK], **SPECIAL_IDS)
  finally:
    if quiet is not None:
      quiet.close()
  return model.getvalue()


def train_tokenizer(data_dir, *, name: str = "covid_cxr", names=None, vocab_size: int = 4000,
                    out=None) -> Path:
  """Trains on the train splits of `names` (default: just `name`) under TFDS `data_dir`; returns
  the model path. By default the model goes into the first dataset's version dir, whose manifest
  then records it (under the conversion lock: never into a dir a conversion is replacing)."""
  options.check(vocab_size=vocab_size)
  names = tuple(names or (name,))
  version_dir = Path(tfds.builder(names[0], data_dir=str(data_dir)).data_dir)
  # Texts de-duplicated across datasets too; order fixed by `names`, so the model is reproducible.
  texts = list(dict.fromkeys(t for n in names for t in train_texts(data_dir, n)))
  model = train_model(texts, vocab_size)
  out = Path(out) if out else version_dir / publish.TOKENIZER
  with publish.locked(Path(data_dir), names[0]):
    paths.write_atomic(out, model)
    if out.resolve().parent == version_dir.resolve():  # the manifest describes its dir only
      _record_in_manifest(version_dir / "manifest.json", out.name, model, vocab_size, names)
  return out


def _record_in_manifest(manifest_path: Path, file: str, model: bytes, vocab_size: int,
                        names: tuple[str, ...]) -> None:
  manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
  manifest["tokenizer"] = {
      "file": file, "sha256": hashlib.sha256(model).hexdigest(),
      "vocab_size": spm.SentencePieceProcessor(model_proto=model).get_piece_size(),
      "requested_vocab_size": vocab_size,
      "trained_on": {"datasets": list(names), "split": "train", "fields": TEXT_FIELDS}}
  paths.write_atomic(manifest_path, json.dumps(manifest, indent=2) + "\n")


def main(argv=None):
  """Every flag is checked before anything is read (an error names the flag, exit code 2)."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data_dir", required=True, help="TFDS data_dir written by the converter")
  parser.add_argument("--name", action="append",
                      help="dataset to train on; repeat for several (default: covid_cxr)")
  options.add_arguments(parser, ("vocab_size",))
  parser.add_argument("--out", default=None, help="default: <data_dir>/<name>/<version>/")
  args = parser.parse_args(argv)
  why = options.source_problem(args.data_dir, "dir")
  if why:
    parser.error(f"argument --data_dir: {why}")
  args.name = args.name or ["covid_cxr"]
  for name in args.name:
    if not (Path(args.data_dir) / name / DATASET_VERSION / "manifest.json").is_file():
      found = sorted(p.parent.parent.name for p in Path(args.data_dir).glob("*/*/manifest.json"))
      parser.error(f"argument --name: no prepared dataset {name!r} in {args.data_dir} (found "
                   f"{found})")
  if args.out:
    out = Path(args.out)
    why = f"{out} is a directory" if out.is_dir() else options.output_problem(out.parent)
    if why:
      parser.error(f"argument --out: {why}")
  path = train_tokenizer(args.data_dir, names=args.name, vocab_size=args.vocab_size,
                         out=args.out)
  print(f"{path} ({hashlib.sha256(path.read_bytes()).hexdigest()})")
