"""Fixtures of the service tests: a real redis-server, the history store over both backends.

The Redis fixture starts the `redis-server` binary on a free port in a temp dir
(`tests.redis_process`; no Docker, no mocks: gorse's `baseTestSuite` runs its cache suite
against real servers); tests that need it skip when the binary is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.app import create_app
from service.history import HistoryStore, open_history_store
from service.loader import LoadedArtifact, load_artifact
from service.settings import Settings
from tests.redis_process import free_port, have_redis, redis_server


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a throw-away redis-server (AOF on, as production should run it)."""
    if not have_redis():
        pytest.skip("redis-server binary not found")
    with redis_server(tmp_path_factory.mktemp("redis")) as (url, _):
        yield url


@pytest.fixture(params=["sqlite", "redis"])
def history_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty history store URL for each backend (Redis is flushed per test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'history.db'}"
        return
    url: str = request.getfixturevalue("redis_url")
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    yield url


@pytest.fixture
def store(history_url: str) -> Iterator[HistoryStore]:
    s = open_history_store(history_url, max_len=5, idempotency_ttl_s=60)
    try:
        yield s
    finally:
        s.close()


# -- artifacts and apps -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def version_dir(tiny_artifact_dir: Path) -> Path:
    """The tiny HLR's version directory (read-only: tests that change files copy it)."""
    from models.artifact import resolve_current

    return resolve_current(tiny_artifact_dir)


@pytest.fixture(scope="session")
def loaded(version_dir: Path) -> LoadedArtifact:
    return load_artifact(version_dir, ort_threads=1)


def make_settings(artifact_dir: Path, history_url: str, **overrides: object) -> Settings:
    """Settings for a test app: no env file, no watcher unless asked, one ORT thread."""
    values: dict[str, object] = {
        "artifact_dir": artifact_dir,
        "history_url": history_url,
        "reload_poll_s": 0.0,
        "ort_threads": 1,
        "faiss_threads": 1,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'history.db'}"


@pytest.fixture
def client(tiny_artifact_dir: Path, sqlite_url: str) -> Iterator[TestClient]:
    """The real app over the tiny artifact and a fresh SQLite store, lifespan running."""
    with TestClient(create_app(make_settings(tiny_artifact_dir, sqlite_url))) as c:
        yield c


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The one error shape, with the request id of the response header."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "request_id"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body


@pytest.fixture(scope="session")
def two_versions(
    tiny_run_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, str]:
    """An artifacts root with two exported versions of the tiny model; `current` -> the first."""
    from models.artifact import point_current
    from training.exporter import export_run

    root = tmp_path_factory.mktemp("two_versions")
    first = export_run(tiny_run_dir, root).name
    second = export_run(tiny_run_dir, root).name
    assert first != second
    point_current(root, first)
    return root, first, second


@pytest.fixture
def artifacts_root(two_versions: tuple[Path, str, str], tmp_path: Path) -> tuple[Path, str, str]:
    """A private copy of `two_versions` that a test may re-point and add versions to."""
    src, first, second = two_versions
    root = tmp_path / "artifacts"
    shutil.copytree(src, root, symlinks=True)
    return root, first, second


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app in this event loop, lifespan running (for concurrency)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://relrec") as c:
            yield c


@pytest.fixture(scope="session")
def medium_version_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HLR trained on a larger planted log (about 1150 items), for retrieval quality: large
    enough that a few dozen candidates are a small share of the catalogue. About 5 s."""
    import torch

    from training.config import load_config
    from training.exporter import export
    from training.filters import binarize, k_core
    from training.pipeline import fit_relational
    from training.splits import per_user
    from training.synthetic import planted_interactions

    torch.manual_seed(0)
    raw = planted_interactions(
        n_users=800,
        n_items=1200,
        n_communities=8,
        items_per_user=30,
        noise=0.2,
        popularity_skew=0.7,
        seed=1,
    )
    split = per_user(k_core(binarize(raw, 4.0), 5), seed=0)
    cfg = load_config(
        algorithm="hlr",  # type: ignore[arg-type]  # load_config types **sections as dicts
        data={"path": "planted", "k_core": 5},
        model={"dim": 32, "n_memory": 8, "l_max": 20},
        trainer={
            "epochs": 6,
            "batch_size": 500,
            "lr": 0.005,
            "progress": False,
            "patience": 6,
            "select_by": "loss",
        },
    )
    model, _, _ = fit_relational(cfg, split)
    return export(
        model,  # type: ignore[arg-type]  # fit_relational is typed as returning a Module
        split.train,
        tmp_path_factory.mktemp("medium"),
        parity_check=False,
    )


# -- real processes: the API under uvicorn, Redis on deploy/redis.conf ------------------------

_SERVE = (
    "import json, sys; from service.server import serve; from service.settings import Settings;"
    " serve(Settings(_env_file=None, **json.loads(sys.argv[1])))"
)


class ApiProcess:
    """`serve()` (uvicorn, as `relrec serve` runs it) in a subprocess on a loopback port.

    Output goes to a file, not a pipe: a full pipe would block the server's access log.
    `start()` may be called again after `kill()` (same port, same settings).
    """

    def __init__(self, log_path: Path, **settings: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.settings = {
            "reload_poll_s": 0,
            "ort_threads": 1,
            "faiss_threads": 1,
            "port": self.port,
            **{k: str(v) if isinstance(v, Path) else v for k, v in settings.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: str = "/healthz", timeout_s: float = 60.0) -> None:
        """Start and wait until `ready` answers 200 (/healthz: up; /readyz: store too)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELREC_")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _SERVE, json.dumps(self.settings)],
                cwd=Path(__file__).resolve().parents[2],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise AssertionError(f"the API exited ({code}): {self.log()[-4000:]}")
            try:
                if httpx.get(self.url + ready, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the API did not answer 200 on {ready}: {self.log()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL: no graceful anything, as a crash or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[Any]:
    """`start_api(**settings) -> ApiProcess`, started; every process is killed at the end."""
    procs: list[ApiProcess] = []

    def start(ready: str = "/healthz", **settings: object) -> ApiProcess:
        api = ApiProcess(tmp_path / f"api-{len(procs)}.log", **settings)
        procs.append(api)
        api.start(ready)
        return api

    try:
        yield start
    finally:
        for api in procs:
            api.kill()


@pytest.fixture
def deploy_redis(tmp_path: Path) -> Iterator[Any]:
    """Redis on deploy/redis.conf (password, AOF everysec, noeviction) in a temp dir: the
    `RedisServers` of tests/deploy; `.start(name, port)` restarts on the same data dir."""
    from tests.deploy.conftest import RedisServers

    servers = RedisServers(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    try:
        yield servers
    finally:
        servers.stop_all()
