"""deploy/entrypoint.sh run outside containers: what the images run, on loopback, bounded in time.

- serve: the API container's command (`serve --host ... --port ...`) over the tiny artifact, with
  the history in a redis-server started on deploy/redis.conf and a password URL, as in
  docker-compose.yml; /healthz, /readyz, a write and a read over HTTP; the image's
  `healthcheck`; then SIGTERM, and the server drains and exits.
- train-demo: the compose trainer, with small sizes; a second run finds `current` and does
  nothing.
- retrain: the Kubernetes CronJob's command, on a base log plus an online log from the history
  store.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from service.history import Event, open_history_store
from tests.deploy.conftest import (
    ENTRYPOINT,
    VENV_BIN,
    RedisStarter,
    clean_env,
    conf_value,
    parse_relrec,
    stop,
)
from tests.redis_process import free_port

SERVE_START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def entrypoint(*args: str, timeout_s: float = 180.0, **env: str
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(ENTRYPOINT), *args], capture_output=True, text=True,
                          timeout=timeout_s, env=clean_env(**env))


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_until_serving(proc: subprocess.Popen[bytes], log: Path, base: str, port: int) -> None:
    """Poll /healthz until it answers; fail fast if the server exits or binds another port."""
    deadline = time.monotonic() + SERVE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`entrypoint.sh serve` exited with {proc.returncode}:\n"
                        f"{log.read_text()[-3000:]}")
        bound = re.search(r"Uvicorn running on http://[^:]+:(\d+)", log.read_text())
        if bound and int(bound.group(1)) != port:
            pytest.fail(f"`relrec serve --port {port}` listens on port {bound.group(1)}: the "
                        "--host/--port flags do not reach the server (service/cli.py)")
        try:
            if http("GET", f"{base}/healthz")[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    pytest.fail(f"no answer on {base}/healthz after {SERVE_START_TIMEOUT_S:.0f} s:\n"
                f"{log.read_text()[-3000:]}")


def test_serve_with_redis_then_sigterm(tiny_artifact_dir: Path, start_redis: RedisStarter,
                                       tmp_path: Path) -> None:
    _, redis_port = start_redis()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    env = clean_env(RELREC_ARTIFACT_DIR=str(tiny_artifact_dir),
                    RELREC_HISTORY_URL=(f"redis://:{conf_value('requirepass')}"
                                        f"@127.0.0.1:{redis_port}/0"),
                    RELREC_RELOAD_POLL_S="0", RELREC_ORT_THREADS="1", RELREC_FAISS_THREADS="1")
    with open(log, "wb") as out:
        proc = subprocess.Popen(["sh", str(ENTRYPOINT), "serve", "--host", "127.0.0.1",
                                 "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        wait_until_serving(proc, log, base, port)
        status, body = http("GET", f"{base}/readyz")
        assert status == 200, body
        assert body["parts"]["artifact"]["ready"] and body["parts"]["store"]["ready"]

        item = json.loads((tiny_artifact_dir / "current" / "item_ids.json").read_text())[0]
        status, body = http("POST", f"{base}/interactions",
                            {"user_id": "deploy-user", "item_id": item})
        assert status == 200, body
        status, body = http("GET", f"{base}/recommend/deploy-user?k=3")
        assert status == 200, body
        assert len(body["items"]) == 3 and item not in [r["item_id"] for r in body["items"]]

        check = entrypoint("healthcheck", f"{base}/healthz", timeout_s=30)
        assert check.returncode == 0, check.stderr
        assert entrypoint("healthcheck", f"{base}/nowhere", timeout_s=30).returncode == 1

        proc.send_signal(signal.SIGTERM)
        # uvicorn drains, runs the lifespan shutdown, then re-raises SIGTERM (-15); as PID 1 in
        # a container, where a default-handled SIGTERM is ignored, it exits 0.
        assert proc.wait(timeout=STOP_TIMEOUT_S) in (0, -signal.SIGTERM)
        text = log.read_text()
        assert "Application shutdown complete" in text, text[-3000:]
    finally:
        stop(proc)


def test_train_demo_exports_once(tmp_path: Path) -> None:
    out = tmp_path / "artifacts"
    args = ["train-demo", "--out", str(out), "--users", "200", "--items", "100",
            "--epochs", "1", "--dim", "8"]
    first = entrypoint(*args, TMPDIR=str(tmp_path))
    assert first.returncode == 0, first.stderr[-3000:]
    version = (out / "current").resolve()
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["model"]["kind"] == "hlr" and manifest["dim"] == 8

    again = entrypoint(*args, timeout_s=30)
    assert again.returncode == 0, again.stderr
    assert "nothing to train" in again.stderr
    assert (out / "current").resolve() == version
    assert sorted(p.name for p in out.iterdir()) == sorted(["current", version.name])
    assert [p for p in tmp_path.iterdir() if p.name.startswith("relrec-train.")] == []


def test_retrain_appends_the_online_log(sample_csv: Path, tmp_path: Path) -> None:
    """The CronJob's command. `relrec export-interactions` is the real one; `train` and
    `export` are recorded and parsed instead of run (train-demo runs them for real above)."""
    history = f"sqlite:///{tmp_path / 'history.db'}"
    store = open_history_store(history, max_len=50)
    store.append([Event("u0-c0", "i1-b0", 1_700_000_000), Event("new-user", "i1-b0", 1)])
    store.close()
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    (bin_dir / "relrec").write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$*" >>"{calls}"\n'
        f'[ "$1" = export-interactions ] && exec "{VENV_BIN / "relrec"}" "$@"\nexit 0\n')
    (bin_dir / "relrec").chmod(0o755)
    out, work = tmp_path / "artifacts", tmp_path / "work"
    done = entrypoint("retrain", "--out", str(out), "--base", str(sample_csv),
                      "--workdir", str(work), "--", "--model", "hlr", "--epochs", "3",
                      RELREC_HISTORY_URL=history,
                      PATH=f"{bin_dir}{os.pathsep}{clean_env()['PATH']}")
    assert done.returncode == 0, done.stderr[-3000:]
    base_rows = sample_csv.read_text().splitlines()
    merged = (work / "data.csv").read_text().splitlines()
    assert merged[0] == base_rows[0] == "user,item,rating,timestamp"
    assert merged[:len(base_rows)] == base_rows
    online = [r.split(",")[:2] for r in merged[len(base_rows):]]  # log order: timestamps
    assert online == [["new-user", "i1-b0"], ["u0-c0", "i1-b0"]]
    commands = [parse_relrec(line.split()) for line in calls.read_text().splitlines()]
    assert [ns.command for ns in commands] == ["export-interactions", "train", "export"]
    assert commands[1].data == str(work / "data.csv") and commands[1].epochs == 3
    assert commands[2].run_dir == commands[1].out and commands[2].out == str(out)


@pytest.mark.parametrize("args,message", [
    (["retrain", "--base", "x.csv"], "--out DIR is required"),
    (["retrain", "--out", "a", "--model", "hlr"], "train flags go after --"),
    (["train-demo", "--users"], "--users needs a value"),
    (["train-demo", "--bogus"], "unknown option --bogus"),
])
def test_bad_arguments_are_named(args: list[str], message: str) -> None:
    done = entrypoint(*args, timeout_s=30)
    assert done.returncode == 2 and message in done.stderr
