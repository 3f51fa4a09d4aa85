"""CPU per request of the ASGI app without sockets (issue 18): where a request's CPU goes
between the socket and the model, each layer measured by the process's CPU clock.

The real app (`service.app.create_app`, SQLite history, the artifact given, lifespan running)
is called directly as an ASGI callable, one request at a time (micro-batches of 1), in one
event loop; no HTTP parsing, no sockets, no client in the process. Each variant is timed by
`time.process_time` (every thread of this process: the batch thread is counted, the machine's
other load is not), the variants alternated round by round, the median reported:

- `recommend_many` alone: the model's path (history read, user state, retrieval, re-rank,
  results), as bench/request_path.py times it;
- GET /healthz through the app: the middleware and FastAPI's smallest route, with FastAPI's
  native telemetry off (the default) and on (RELREC_OTEL: its per-request check for
  configured OpenTelemetry providers);
- GET /recommend through the fast path (RELREC_FAST_RECOMMEND) with the batch run inline on
  the loop, then in a thread (the default: + the thread hand-off), then through FastAPI's route
  (+ routing, dependency injection, validation), without the access log and with FastAPI's
  telemetry.

    python bench/app_path.py ARTIFACT_DIR [--users 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import artifact as art  # noqa: E402
from models.artifact_arrays import read_arrays  # noqa: E402
from service.app import create_app  # noqa: E402
from service.middleware import LOG_FORMAT, RequestIdFilter  # noqa: E402
from service.recommender import Query  # noqa: E402
from service.settings import Settings  # noqa: E402

Call = Callable[[str], Coroutine[Any, Any, int]]
OTEL = "fast path, thread, FastAPI telemetry (RELREC_OTEL)"


def asgi_get(app: Any) -> Call:
    """GET path?query through the app; returns the status."""

    async def get(target: str) -> int:
        path, _, query = target.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query.encode(),
            "headers": [(b"host", b"relrec")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        status = 0

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        return status

    return get


async def time_requests(get: Call, targets: list[str]) -> float:
    """CPU ms per request of these requests, one at a time."""
    started = time.process_time()
    for t in targets:
        status = await get(t)
        if status != 200:
            raise RuntimeError(f"{t}: status {status}")
    return 1000 * (time.process_time() - started) / len(targets)


def settings(artifact: Path, db: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "artifact_dir": artifact,
        "history_url": f"sqlite:///{db}",
        "reload_poll_s": 0.0,
        "ort_threads": 1,
        "faiss_threads": 1,
        "log_level": "INFO",
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def measure(artifact: Path, users: list[str], rounds: int) -> dict[str, list[float]]:
    targets = [f"/recommend/{quote(u, safe='')}?k=10" for u in users]
    variants = {
        "fast path, batch inline": {"batch_executor": "inline"},
        "fast path, batch in a thread (default)": {},
        "FastAPI route, batch in a thread": {"fast_recommend": False},
        "fast path, thread, no access log": {"access_log": False},
        OTEL: {"otel": True},
    }
    healthz_via = {
        "GET /healthz": "fast path, batch in a thread (default)",
        "GET /healthz, FastAPI telemetry (RELREC_OTEL)": OTEL,
    }
    out: dict[str, list[float]] = {"recommend_many alone": [], **{h: [] for h in healthz_via}}
    out.update({name: [] for name in variants})
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "history.db"
        apps = {n: create_app(settings(artifact, db, **o)) for n, o in variants.items()}
        contexts = [app.router.lifespan_context(app) for app in apps.values()]
        for c in contexts:
            await c.__aenter__()
        try:
            first = next(iter(apps.values()))
            recommender = first.state.runtime.versions.current.recommender
            calls = {n: asgi_get(app) for n, app in apps.items()}
            for get in calls.values():  # warm-up
                await time_requests(get, targets[:50])
            for _ in range(rounds):
                started = time.process_time()
                for u in users:
                    recommender.recommend_many([Query(u, 10)])
                ms = 1000 * (time.process_time() - started) / len(users)
                out["recommend_many alone"].append(ms)
                healthz = ["/healthz"] * len(users)
                for row, via in healthz_via.items():
                    out[row].append(await time_requests(calls[via], healthz))
                for name, get in calls.items():
                    out[name].append(await time_requests(get, targets))
        finally:
            for c in contexts:
                await c.__aexit__(None, None, None)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    # The access log formatted and written as `relrec serve` writes it, to /dev/null.
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - for the run
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    access = logging.getLogger("service.access")
    access.addHandler(handler)
    access.propagate = False
    arrays = read_arrays(art.resolve_version_dir(args.artifact))
    users = [str(u) for u in arrays.user_ids.ids[: args.users]]
    runs = asyncio.run(measure(args.artifact, users, args.rounds))
    medians = {k: statistics.median(v) for k, v in runs.items()}
    print("| CPU ms per request (median of rounds) | ms |\n|---|---:|")
    for name, ms in medians.items():
        print(f"| {name} | {ms:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "median": medians}, indent=2) + "\n")


if __name__ == "__main__":
    main()
