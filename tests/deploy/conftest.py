"""Fixtures of the deployment tests: the repo's deploy files, real redis-servers, relrec's parsers.

Nothing here needs Docker: the files the containers are built from and run are checked by the
tools that lint or validate them (hadolint, shellcheck, a compose implementation), and the
commands the containers run are run here, outside containers, on loopback ports, by the same
`deploy/entrypoint.sh` on the same `deploy/redis.conf`. Every process started is killed at the
end of its test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import redis_process
from tests.redis_process import have_redis, stop

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
ENTRYPOINT = DEPLOY / "entrypoint.sh"
REDIS_CONF = DEPLOY / "redis.conf"
DOCKERFILE = REPO / "Dockerfile"
# The venv's bin: relrec, and the linters the dev extra installs (hadolint, shellcheck).
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str | None:
    """`name` from the venv running the tests, else from PATH."""
    local = VENV_BIN / name
    return str(local) if local.is_file() and os.access(local, os.X_OK) else shutil.which(name)


def settings_env_names() -> set[str]:
    """The RELREC_* variables `relrec serve` reads: one per field of `Settings`."""
    from service.settings import Settings

    prefix = str(Settings.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without RELREC_* settings, the venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELREC_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def conf_value(name: str) -> str:
    """A directive's value in deploy/redis.conf (the last one wins, as in Redis)."""
    value = None
    for line in REDIS_CONF.read_text().splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0] == name:
            value = parts[1].strip().strip('"')
    assert value is not None, f"{name} is not set in {REDIS_CONF}"
    return value


# -- the Dockerfile ---------------------------------------------------------------------------


def stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined), in file order."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            current = result.setdefault(match.group(2) or match.group(1), [f"FROM {match[1]}"])
        elif current is not None:
            current.append(line)
    return result


def json_args(stage: list[str], instruction: str) -> list[str]:
    lines = [line for line in stage if line.upper().startswith(instruction + " ")]
    assert lines, f"no {instruction} in the stage"
    args: list[str] = json.loads(lines[-1].split(None, 1)[1])  # exec form only
    return args


# -- relrec's own parsers --------------------------------------------------------------------


def parse_relrec(argv: list[str]) -> argparse.Namespace:
    """Parse `relrec ARGV` with the parser that would run it, as `service.cli.main` dispatches."""
    from service.cli import OFFLINE, _serving_parser

    if argv and argv[0] in OFFLINE:
        from training.cli import add_subcommands

        parser = argparse.ArgumentParser(prog="relrec")
        add_subcommands(parser.add_subparsers(dest="command", required=True))
    else:
        parser = _serving_parser()
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"relrec's parser rejects: relrec {' '.join(argv)}") from exc


def entrypoint_commands(args: list[str], tmp_path: Path) -> list[list[str]]:
    """The relrec commands `deploy/entrypoint.sh ARGS` would run (its dry-run mode)."""
    proc = subprocess.run(["sh", str(ENTRYPOINT), *args], capture_output=True, text=True,
                          timeout=30, env=clean_env(ENTRYPOINT_DRY_RUN="1",
                                                    TMPDIR=str(tmp_path)))
    assert proc.returncode == 0, f"entrypoint.sh {args} failed: {proc.stderr}"
    commands = [line.split("\t") for line in proc.stdout.splitlines() if line]
    assert commands, f"entrypoint.sh {args} runs nothing"
    for command in commands:
        assert command[0] == "relrec", f"entrypoint.sh {args} runs {command}, not relrec"
    return [command[1:] for command in commands]


def check_container_args(args: list[str], tmp_path: Path) -> list[argparse.Namespace]:
    """Every relrec command behind a container's arguments, parsed by relrec's parsers."""
    return [parse_relrec(argv) for argv in entrypoint_commands(args, tmp_path)]


# -- redis-server --------------------------------------------------------------------------


RedisStarter = Callable[..., tuple[subprocess.Popen[bytes], int]]


class RedisServers:
    """`redis-server deploy/redis.conf` processes on loopback, each in its own dir under `root`.

    Only port, bind and dir are overridden (plus `extra` arguments); the password, AOF and
    memory policy are the file's. `stop_all()` stops every server started.
    """

    def __init__(self, root: Path) -> None:
        if not have_redis():
            pytest.skip("redis-server binary not found (scripts/setup.sh installs it)")
        self.root = root
        self.password = conf_value("requirepass")
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str = "redis", port: int | None = None, *extra: str
              ) -> tuple[subprocess.Popen[bytes], int]:
        workdir = self.root / name
        workdir.mkdir(exist_ok=True)
        proc, port = redis_process.start_redis(workdir, *extra, config=REDIS_CONF, port=port,
                                               password=self.password)
        self.procs.append(proc)
        return proc, port

    def stop_all(self) -> None:
        for proc in self.procs:
            stop(proc)


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[RedisStarter]:
    """`RedisServers.start` for one test: (process, port); stopped when the test ends."""
    servers = RedisServers(tmp_path)
    try:
        yield servers.start
    finally:
        servers.stop_all()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A hard bound on every test here (pytest-timeout), on top of each step's own timeout."""
    here = Path(__file__).parent
    for item in items:
        if item.path.parent == here:
            item.add_marker(pytest.mark.timeout(240))
