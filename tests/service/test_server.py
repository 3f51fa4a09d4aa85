"""`serve()` under a real uvicorn in a subprocess: it answers, and SIGTERM shuts it down
gracefully (in-flight work done, lifespan shutdown run)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.redis_process import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_serve_answers_and_stops_gracefully_on_sigterm(
    tiny_artifact_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    code = (
        "from service.server import serve; from service.settings import Settings; "
        f"serve(Settings(_env_file=None, artifact_dir={str(tiny_artifact_dir)!r}, "
        f"history_url={'sqlite:///' + str(tmp_path / 'h.db')!r}, reload_poll_s=0, "
        f"ort_threads=1, port={port}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError("server did not become ready")
        r = httpx.get(f"{url}/recommend/u1-c1", headers={"X-Request-ID": "trace-me"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "trace-me"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # uvicorn re-raises the signal after its graceful shutdown, so the exit is "by SIGTERM"
    log = out.decode()
    assert proc.returncode in (0, -signal.SIGTERM), log
    assert "[trace-me] GET /recommend/u1-c1 200" in log  # access log with the request id
    assert "Application shutdown complete" in log


def _in_flight(url: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith("relrec_requests_in_flight "):
            return float(line.split()[1])
    raise AssertionError("relrec_requests_in_flight is not exported")


@pytest.mark.timeout(90)
def test_sigterm_with_20_requests_in_flight_completes_them_and_turns_unready_first(
    deploy_redis: Any, start_api: Any, tiny_artifact_dir: Path
) -> None:
    """Redis is frozen (SIGSTOP) so that 20 requests stay in flight, for real, in the store
    read; then SIGTERM: /readyz answers 503 while the listener still accepts, the listener
    closes, Redis thaws, and all 20 requests complete with 200 before the process exits."""
    redis_proc, port = deploy_redis.start("r")
    history = f"redis://:{deploy_redis.password}@127.0.0.1:{port}/0"
    api = start_api(
        ready="/readyz",
        artifact_dir=tiny_artifact_dir,
        history_url=history,
        shutdown_drain_s=2.0,
    )
    deadline = time.monotonic() + 30
    redis_proc.send_signal(signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(20) as pool:
            futures = [
                pool.submit(httpx.get, f"{api.url}/recommend/u{i}-c{i % 4}", timeout=60)
                for i in range(20)
            ]
            while _in_flight(api.url) < 20:
                assert time.monotonic() < deadline, "the 20 requests never were in flight"
                time.sleep(0.02)
            api.proc.send_signal(signal.SIGTERM)
            while "draining" not in api.log():  # (a /readyz now could wait on the frozen store)
                assert time.monotonic() < deadline, "the drain never started"
                time.sleep(0.02)
            ready = httpx.get(f"{api.url}/readyz", timeout=5)
            body = ready.json()
            assert ready.status_code == 503 and body["error"]["details"] == [
                {"part": "server", "ready": False, "detail": "draining"}
            ]
            while True:  # the listener closes after the drain
                assert time.monotonic() < deadline, "the listener never closed"
                try:
                    httpx.get(f"{api.url}/healthz", timeout=5)
                except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                    # refused, or reset: a connection the backlog held when the listener closed
                    break
                time.sleep(0.05)
            assert all(not f.done() for f in futures)  # still waiting on the frozen Redis
            redis_proc.send_signal(signal.SIGCONT)
            answers = [f.result() for f in futures]
    finally:
        redis_proc.send_signal(signal.SIGCONT)
    assert [r.status_code for r in answers] == [200] * 20, [r.text for r in answers]
    assert api.proc.wait(timeout=30) in (0, -signal.SIGTERM)
    log = api.log()
    assert log.index("draining") < log.index("Shutting down")
    assert "Application shutdown complete" in log
