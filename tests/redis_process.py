"""A real `redis-server` on a free loopback port, for the tests and the benchmarks.

The one copy of "start redis-server, wait until it answers, stop it": `tests/service` (the
history suite's Redis backend), `tests/deploy` (servers on deploy/redis.conf) and `bench/`
(serve.py, soak.py, ...) all start theirs here. It lives in the `tests` package, not in
`service/`, so that it never ships in the wheel or the serving image; the bench scripts put the
repository root on `sys.path` before importing anything of the repo, so `tests.redis_process`
imports there as it does under pytest. Standard library and redis-py only.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

__all__ = [
    "REDIS_BIN",
    "THROWAWAY",
    "free_port",
    "have_redis",
    "redis_server",
    "start_redis",
    "stop",
    "wait_for_redis",
]

REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"
# A throw-away server: no RDB snapshots, AOF on (fsync every second, as production should run
# it), in the foreground so that stopping the process stops the server.
THROWAWAY = ("--save", "", "--appendonly", "yes", "--daemonize", "no")


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def have_redis() -> bool:
    return Path(REDIS_BIN).exists()


def wait_for_redis(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Return once `url` answers PING; AssertionError if the server exits or stays silent."""
    client = redis.Redis.from_url(url, socket_timeout=1.0)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if proc.poll() is not None:
                    raise AssertionError(f"redis-server exited with {proc.returncode}") from None
                if time.monotonic() > deadline:
                    raise AssertionError(f"redis-server at {url} did not answer") from None
                time.sleep(0.05)
    finally:
        client.close()


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after `timeout_s`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)


def start_redis(
    workdir: Path,
    *args: str,
    config: Path | None = None,
    port: int | None = None,
    password: str | None = None,
    cpus: set[int] | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """`redis-server [config] --port P --bind 127.0.0.1 --dir workdir *args`, answering PING.

    `password` is the one `config` or `args` set (used to wait for it); `cpus` pins the server.
    """
    port = port or free_port()
    cmd = [REDIS_BIN, *([str(config)] if config else []), "--port", str(port),
           "--bind", "127.0.0.1", "--dir", str(workdir), *args]
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=pin)
    auth = f":{password}@" if password else ""
    try:
        wait_for_redis(f"redis://{auth}127.0.0.1:{port}/0", proc)
    except BaseException:
        stop(proc)
        raise
    return proc, port


@contextmanager
def redis_server(
    workdir: Path, cpus: set[int] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A throw-away redis-server (`THROWAWAY`) in `workdir`: (URL, process); stopped on exit."""
    proc, port = start_redis(workdir, *THROWAWAY, cpus=cpus)
    try:
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        stop(proc)
