"""Issue 19: every `relrec` command in README.md runs as written.

Each command is parsed by the real CLI parser; the data each `relrec train` names must exist
and survive its filters (read, k-core, split: no training); the cheap ones (`--version`,
`--help`, the own-data examples on generated files) are run for real.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def readme_commands() -> list[str]:
    """`relrec …` lines of the README's bash blocks, comments and env prefixes removed."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    commands = []
    for line in (ln.split(" #")[0].strip() for b in blocks for ln in b.splitlines()):
        words = shlex.split(line) if line and not line.startswith("#") else []
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words = words[1:]
        if words and words[0] == "relrec":
            commands.append(shlex.join(words))
    return commands


COMMANDS = readme_commands()
OWN_DATA = [c for c in COMMANDS if "my_log." in c]


def relrec(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("relrec")
    head = [str(exe)] if exe.is_file() else [sys.executable, "-m", "service.cli"]
    return subprocess.run(head + args, capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={"PATH": str(exe.parent), "PYTHONPATH": str(ROOT)})


def test_the_readme_has_the_commands_this_suite_checks() -> None:
    assert "relrec --version" in COMMANDS and "relrec train --help" in COMMANDS
    assert len(OWN_DATA) == 2 and sum(c.startswith("relrec train ") for c in COMMANDS) >= 6


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_parses(command: str) -> None:
    import argparse

    from service.cli import OFFLINE, _serving_parser
    from training.cli import add_subcommands

    args = shlex.split(command)[1:]
    if args[0].startswith("-"):
        return  # --version: run below
    if args[0] in OFFLINE:
        parser = argparse.ArgumentParser(prog="relrec")
        add_subcommands(parser.add_subparsers(dest="command", required=True))
    else:
        parser = _serving_parser()
    if "--help" not in args:
        parser.parse_args(args)  # SystemExit(2) on a flag the CLI does not have


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="no ../shared/data next to the checkout")
@pytest.mark.parametrize("command", [c for c in COMMANDS if "../shared/data" in c])
def test_each_benchmark_command_has_data_its_filters_keep(command: str) -> None:
    import argparse

    from training.cli import add_train_parser, config_from_args
    from training.pipeline import prepare

    args = shlex.split(command)[1:]
    for path in (a for a in args if a.startswith("../shared/data")):
        assert (ROOT / path).exists(), path
    parser = argparse.ArgumentParser(prog="relrec")
    add_train_parser(parser.add_subparsers())
    cfg = config_from_args(parser.parse_args(args))
    cfg.data.path = str(ROOT / cfg.data.path)
    split = prepare(cfg)  # a k-core that leaves nothing raises DataError (the SERML example)
    assert len(split.train) > 0 and len(split.test) > 0


def test_version_and_help_run(tmp_path: Path) -> None:
    version = relrec(["--version"], tmp_path)
    assert version.returncode == 0 and re.fullmatch(r"relrec \d+\.\d+\.\d+\S*\n", version.stdout)
    help_ = relrec(["train", "--help"], tmp_path)
    assert help_.returncode == 0 and "(default: 30)" in help_.stdout, help_.stderr


def test_own_data_examples_run_on_generated_files(tmp_path: Path) -> None:
    """The two `my_log.*` examples, word for word, on files laid out as their comments say."""
    rows = [(f"m{u}", f"s{(u * 7 + j) % 40}", 5, 1000 + j) for u in range(60) for j in range(15)]
    (tmp_path / "my_log.csv").write_text(
        "member,show,stars,ts\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows))
    (tmp_path / "my_log.tsv").write_text("".join(f"{u}\t{i}\t{r}\n" for u, i, r, _ in rows))
    for command in OWN_DATA:
        done = relrec(shlex.split(command)[1:], tmp_path)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        out = shlex.split(command)[shlex.split(command).index("--out") + 1]
        assert (tmp_path / out / "metrics.json").is_file()
