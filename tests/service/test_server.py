"""`serve()` under a real uvicorn in a subprocess: it answers, and SIGTERM shuts it down
gracefully (in-flight work done, lifespan shutdown run)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def test_serve_answers_and_stops_gracefully_on_sigterm(
    tiny_artifact_dir: Path, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
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
