"""Hot reload: versions swap under concurrent requests with zero failures; in-flight requests
finish on their version; a broken version is refused while the old one keeps serving."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx
import pytest

from models import artifact as art
from service.app import create_app
from tests.service.conftest import assert_error, make_settings, running

Root = tuple[Path, str, str]


def test_swap_under_concurrent_requests_has_zero_failures(
    artifacts_root: Root, sqlite_url: str
) -> None:
    root, first, second = artifacts_root
    app = create_app(make_settings(root, sqlite_url, reload_poll_s=0.05))
    users = [f"u{i}-c{i % 4}" for i in range(40)] + ["cold", "nobody"]
    statuses: list[int] = []
    versions: set[str] = set()

    async def load(c: httpx.AsyncClient, stop: asyncio.Event, worker: int) -> None:
        i = worker
        while not stop.is_set():
            r = await c.get(f"/recommend/{users[i % len(users)]}", params={"k": 5})
            statuses.append(r.status_code)
            if r.status_code == 200:
                versions.add(r.json()["model_version"])
            i += 7

    async def main() -> int:
        swaps = 0
        async with running(app) as c:
            stop = asyncio.Event()
            workers = [asyncio.create_task(load(c, stop, w)) for w in range(16)]
            for n in range(6):  # swap by the pointer (watcher) and by the admin endpoint
                art.point_current(root, second if n % 2 == 0 else first)
                if n % 3 == 0:
                    r = await c.post("/admin/reload")
                    assert r.status_code == 200, r.text
                await asyncio.sleep(0.25)
                swaps += 1
            stop.set()
            await asyncio.gather(*workers)
        return swaps

    assert asyncio.run(main()) == 6
    assert len(statuses) > 100
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert versions == {first, second}


def test_in_flight_requests_finish_on_their_version(artifacts_root: Root, sqlite_url: str) -> None:
    root, first, second = artifacts_root
    app = create_app(make_settings(root, sqlite_url))
    runtime = app.state.runtime

    async def main() -> None:
        async with running(app) as c:
            old = runtime.versions.current.recommender
            slow_many = old.recommend_many

            def slow(queries: object) -> object:
                time.sleep(0.5)  # the batch runs in a thread while the swap happens
                return slow_many(queries)

            old.recommend_many = slow
            in_flight = asyncio.create_task(c.get("/recommend/u1-c1"))
            await asyncio.sleep(0.1)
            art.point_current(root, second)
            swap = await c.post("/admin/reload")
            assert swap.json() == {"version": second, "previous": first, "changed": True}
            fresh = await c.get("/recommend/u1-c1")
            started_before = await in_flight
            assert fresh.json()["model_version"] == second
            assert started_before.status_code == 200
            assert started_before.json()["model_version"] == first

    asyncio.run(main())


def _break_scorer(root: Path, version: str, name: str, keep_hashes: bool) -> str:
    """A copy of `version` whose scorer.onnx is garbage; with keep_hashes the manifest is
    rewritten to match, so that only onnxruntime can notice."""
    shutil.copytree(root / version, root / name)
    (root / name / art.SCORER).write_bytes(b"\x08\x07garbage, not a protobuf" * 10)
    if keep_hashes:
        manifest = art.read_manifest(root / name)
        files = {**manifest.files, art.SCORER: art.file_sha256(root / name / art.SCORER)}
        sizes = {**manifest.sizes, art.SCORER: (root / name / art.SCORER).stat().st_size}
        art.write_manifest(
            root / name,
            manifest.model_copy(update={"files": files, "sizes": sizes, "version": name}),
        )
    return name


def test_broken_version_is_refused_and_the_old_one_keeps_serving(
    artifacts_root: Root, sqlite_url: str
) -> None:
    from fastapi.testclient import TestClient

    root, first, _ = artifacts_root
    with TestClient(create_app(make_settings(root, sqlite_url))) as c:
        for name, keep in (("corrupt-copy", False), ("bad-graph", True)):
            _break_scorer(root, first, name, keep)
            art.point_current(root, name)
            body = assert_error(c.post("/admin/reload"), 409, "artifact_rejected")
            assert name in body["error"]["message"]
            r = c.get("/recommend/u1-c1")
            assert r.status_code == 200 and r.json()["model_version"] == first
            ready = c.get("/readyz").json()
            assert ready["parts"]["artifact"]["version"] == first
            assert name in ready["parts"]["artifact"]["detail"]
        assert 'relrec_reloads_total{result="rejected"} 2.0' in c.get("/metrics").text


def test_watcher_loads_a_version_that_appears_after_start(
    artifacts_root: Root, sqlite_url: str, tmp_path: Path
) -> None:
    src, first, _ = artifacts_root
    root = tmp_path / "later"
    root.mkdir()
    app = create_app(make_settings(root, sqlite_url, reload_poll_s=0.05))

    async def main() -> None:
        async with running(app) as c:
            assert (await c.get("/readyz")).status_code == 503
            assert (await c.get("/recommend/u1-c1")).status_code == 503
            shutil.copytree(src / first, root / first)
            art.point_current(root, first)
            for _ in range(100):
                if (await c.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            r = await c.get("/recommend/u1-c1")
            assert r.status_code == 200 and r.json()["model_version"] == first

    asyncio.run(main())


@pytest.mark.timeout(90)
def test_ten_reloads_and_a_corrupt_version_under_load_fail_no_request(
    artifacts_root: Root, sqlite_url: str
) -> None:
    """10 swaps between two versions (via `current`) and one corrupt version, under steady
    load: every request answers 200 and names a version that was live while it ran; the
    corrupt one is refused and never serves."""
    root, first, second = artifacts_root
    corrupt = _break_scorer(root, first, "corrupt", keep_hashes=True)
    app = create_app(make_settings(root, sqlite_url))
    live: list[tuple[float, float, str]] = []  # swaps: (reload called, returned, version)
    answers: list[tuple[float, float, int, str | None]] = []  # start, end, status, version

    async def load(c: httpx.AsyncClient, stop: asyncio.Event, worker: int) -> None:
        i = worker
        while not stop.is_set():
            started = time.monotonic()
            r = await c.get(f"/recommend/u{i % 40}-c{i % 4}", params={"k": 5})
            version = r.json().get("model_version") if r.status_code == 200 else None
            answers.append((started, time.monotonic(), r.status_code, version))
            i += 7

    async def main() -> None:
        async with running(app) as c:
            live.append((0.0, 0.0, first))
            stop = asyncio.Event()
            workers = [asyncio.create_task(load(c, stop, w)) for w in range(16)]
            for n in range(11):
                target = corrupt if n == 5 else (second if len(live) % 2 else first)
                art.point_current(root, target)
                before = time.monotonic()
                r = await c.post("/admin/reload")
                if target == corrupt:
                    assert_error(r, 409, "artifact_rejected")
                else:
                    assert r.status_code == 200 and r.json()["version"] == target, r.text
                    live.append((before, time.monotonic(), target))
                await asyncio.sleep(0.15)
            stop.set()
            await asyncio.gather(*workers)

    asyncio.run(main())
    assert len(live) == 11  # the first version and 10 swaps
    assert len(answers) > 100
    assert {status for _, _, status, _ in answers} == {200}
    for started, ended, _, version in answers:
        # live during [started, ended]: from the last swap done before `started` on, each
        # swap whose reload was called before `ended`
        done = max(i for i, (_, returned, _) in enumerate(live) if returned <= started)
        during = {v for i, (called, _, v) in enumerate(live) if i >= done and called <= ended}
        assert version in during, (started, ended, version, live)
    assert corrupt not in {v for *_, v in answers}
    assert {first, second} == {v for *_, v in answers}
