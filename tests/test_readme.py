"""README.md's commands name tools, flags, configs, config fields and repo files that exist.
Nothing runs or compiles: flags come from importing each tool, configs are loaded and resolved."""
import contextlib
import functools
import importlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from medjax.cli import common, prepare
from medjax.configs import resolve

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
MODULES = {target.split(":")[0]: name for name, target in SCRIPTS.items()}  # python -m <module>
LAUNCHERS = ("bash", "sh", "sbatch")
LAUNCHED = "medjax-train"  # what launch/* pass everything after `--` to
# `a/b` under these top-level directories, anywhere in the README: a path of the repo.
REPO_PATH = re.compile(r"(?<![\w./~-])(?:medjax|tests|docs|launch|benchmarks|notebooks|\.ci)"
                       r"(?:/[\w.-]+)+/?")


def commands(text: str):
  """(line, command) of each bash / sh / plain fenced line (`\\`-joined), then each inline span."""
  fence, start, pending, prose = None, 0, "", []
  for n, line in enumerate(text.splitlines(), 1):
    prose.append("" if fence is not None or line.startswith("```") else line)
    if line.startswith("```"):
      fence = line[3:].strip() if fence is None else None
    elif fence in ("", "bash", "sh"):
      start, pending = start if pending else n, pending + line
      if not pending.endswith("\\"):
        yield start, pending
      pending = pending[:-1] if pending.endswith("\\") else ""
  prose = "\n".join(prose)
  for m in re.finditer(r"`([^`]+)`", prose):
    yield prose.count("\n", 0, m.start()) + 1, m.group(1)


def words_of(command: str) -> list[str] | None:
  """The words after VAR=value prefixes, or None if not medjax's; ValueError if quotes are open."""
  words = shlex.split(command, comments=True)
  while words and re.fullmatch(r"\w+=.*", words[0]):
    words.pop(0)
  if words[:2] in (["python", "-m"], ["python3", "-m"]) and len(words) > 2:
    words = [MODULES.get(words[2], f"python -m {words[2]}"), *words[3:]]
  ours = words and (words[0] in LAUNCHERS or words[0].startswith(
      ("medjax-", "python -m medjax.", "python -m benchmarks.")))
  return words if ours else None


def problems(text: str) -> tuple[list[str], int]:
  """('README.md:<line>: `<command>`: <what is not there>' for each, commands checked)."""
  found, checked = [], 0
  for n, command in commands(text):
    where = f"README.md:{n}: `{' '.join(command.split())}`"
    try:
      words = words_of(command)
    except ValueError as e:  # an open quote: reported if the line names a tool
      found += [f"{where}: {e}"] if re.search(r"\bmedjax-\w", command) else []
      continue
    checked += bool(words)
    found += [f"{where}: {p}" for p in (check(words) if words else ())]
  found += [f"README.md:{text.count(chr(10), 0, m.start()) + 1}: {m.group()}: no such path"
            for m in REPO_PATH.finditer(text) if not (REPO / m.group()).exists()]
  return found, checked


def check(words: list[str]) -> list[str]:
  """What one command (words_of's words) names that is not there."""
  tool, *args = words
  if tool in LAUNCHERS:  # a script of the repo, its options, then medjax-train's after `--`
    script = next((a for a in args if not a.startswith("-")), "")
    if not (REPO / script).is_file():
      return [f"{script}: no such script"]
    args = args[args.index(script) + 1:]
    end = args.index("--") if "--" in args else len(args)
    options = re.findall(r"^\s*--(\w+)\)", (REPO / script).read_text(), re.M)
    bad = [f"{script} has no option {a}" for a in args[:end]
           if a.startswith("--") and a[2:] not in options]
    return bad + (check([LAUNCHED, *args[end + 1:]]) if args[end + 1:] else [])
  if tool.startswith("python -m "):
    module = tool.removeprefix("python -m ")
    ok = "<" in module or any(REPO.joinpath(module.replace(".", "/") + end).is_file()
                              for end in (".py", "/__main__.py"))
    return [] if ok else [f"no module {module}"]
  if tool not in SCRIPTS:
    return [f"{tool}: not a console script of pyproject.toml"]
  if tool == "medjax-prepare" and args and not args[0].startswith("-"):
    tool, *args = f"{tool} {args[0]}", *args[1:]  # each step has its own flags
  if tool not in defined_flags():
    return [f"{tool}: no such step (of {sorted(prepare.STEPS)})"]
  names = [a[2:].split("=", 1)[0] for a in args if a.startswith("--")]
  bad = [f"{tool} has no flag --{n}" for n in names
         if n not in defined_flags()[tool] and not n.startswith("config.")]
  if "config" in names and "config" in defined_flags()[tool]:  # load, override, resolve
    try:
      argv = common._with_config_paths(["readme", *args])
      parsed = flags.FlagValues()
      config_flags.DEFINE_config_file("config", None, flag_values=parsed, lock_config=True,
                                      sys_argv=argv)
      parsed(argv, known_only=True)
      resolve.resolved(parsed.config)
    except Exception as e:  # a missing config or field, a bad value: what the CLI refuses
      bad.append(f"{type(e).__name__}: {str(e).strip().splitlines()[-1]}")
  return bad


@functools.cache
def defined_flags() -> dict[str, set[str]]:
  """Each tool's flags ("medjax-prepare <step>" per step), listed by this file run as a script."""
  tools = [*SCRIPTS, *(f"medjax-prepare {step}" for step in prepare.STEPS)]
  done = subprocess.run([sys.executable, __file__, *tools], capture_output=True, text=True,
                        env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
  assert done.returncode == 0, done.stderr[-3000:]
  return {tool: set(names) for tool, names in json.loads(done.stdout.splitlines()[-1]).items()}


def print_flags(tools: list[str]) -> None:
  """Prints {tool: flags}: absl's after importing it (then dropped for the next), or --help's."""
  found = {}
  app.define_help_flags()  # --help, --helpfull, ...: what absl's app.run accepts too
  for tool in tools:
    script, _, step = tool.partition(" ")
    module, entry = SCRIPTS[script].split(":")
    run = getattr(importlib.import_module(module), entry)
    own = [f.name for m, fs in flags.FLAGS.flags_by_module_dict().items()
           if m.startswith("medjax.cli.") for f in fs]
    if own:
      found[tool] = [*flags.FLAGS, *("no" + n for n in flags.FLAGS if flags.FLAGS[n].boolean)]
      for name in own:
        delattr(flags.FLAGS, name)
    else:
      with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        run([*filter(None, [step]), "--help"])
      found[tool] = re.findall(r"^  (?:-\w, )?--([\w-]+)", out.getvalue(), re.M)
  print(json.dumps(found))


def test_readme_commands():
  found, checked = problems((REPO / "README.md").read_text())
  assert checked >= 20, f"only {checked} medjax commands in README.md: is the extraction broken?"
  assert not found, "README.md names what does not exist:\n" + "\n".join(found)


def test_problems_are_reported():
  found, checked = problems(
      "```bash\nmedjax-train --config=medmllm_s --workdir w --no_such_flag=1 \\\n"
      "    --config.no_such.field=2\nmedjax-trian --config medmllm_s\n"
      "bash launch/tpu_pod.sh --dry_run --nozone z -- --config medmllm_x\n```\n"
      "See `notebooks/nosuch.ipynb`, `python -m medjax.cli.nosuch`, `medjax-prepare nosuch`.")
  assert checked == 5, found
  for expected in ("README.md:2: `medjax-train --config=medmllm_s --workdir w --no_such_flag=1 "
                   "--config.no_such.field=2`: medjax-train has no flag --no_such_flag",
                   "KeyError: \"'no_such'\"", "README.md:4: `medjax-trian --config medmllm_s`",
                   "tpu_pod.sh has no option --nozone", "no config named 'medmllm_x'",
                   "README.md:7: notebooks/nosuch.ipynb: no such path",
                   "no module medjax.cli.nosuch", "medjax-prepare nosuch: no such step"):
    assert any(expected in p for p in found), (expected, found)


if __name__ == "__main__":
  print_flags(sys.argv[1:])
