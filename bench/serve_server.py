"""The server side of bench/serve.py: start `relrec serve` pinned to some cores, wait until
every worker answers, and read the service's own /metrics per worker (stage times, batches,
CPU seconds) into per-request figures. Shared by bench/serve.py, serve_arms.py,
serve_executors.py and the other serving benches.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.redis_process import free_port  # noqa: E402

STAGES = ("history", "retrieval", "rerank", "serialize")
def split_cores(server_cores: int) -> tuple[set[int], set[int]]:
    """(server cores, client cores): the first `server_cores` of this process's CPUs serve."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return set(cores), set(cores)
    n = min(server_cores, len(cores) - 1)
    return set(cores[:n]), set(cores[n:])


def pinned(cpus: set[int]):  # -> preexec_fn
    return lambda: os.sched_setaffinity(0, cpus)


# -- the server side --------------------------------------------------------------------------


# url -> workers of each server `relrec_server` started, for `scrape_workers`
WORKERS: dict[str, int] = {}


@contextmanager
def relrec_server(
    artifact: Path,
    redis_url: str,
    workers: int,
    cpus: set[int],
    env_extra: dict[str, str],
    source: Path = ROOT,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`relrec serve` (python -m service.cli serve) of the code in `source` (this tree, or a
    checkout of an earlier commit), ready when every worker answers."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(source),
        "RELREC_RELOAD_POLL_S": "0",
        "RELREC_LOG_LEVEL": "WARNING",
        "RELREC_ORT_THREADS": "1",
        "RELREC_FAISS_THREADS": "1",
        **env_extra,
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--artifact-dir",
            str(Path(artifact).resolve()),  # the server may run in another tree
            "--history-url",
            redis_url,
        ],
        cwd=source,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=pinned(cpus),
    )
    url = f"http://127.0.0.1:{port}"
    WORKERS[url] = workers
    try:
        _wait_ready(url, proc, workers)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], workers: int) -> None:
    deadline = time.monotonic() + 600  # a 1M-item artifact takes a while to load
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"relrec serve exited with {proc.returncode}")
        try:
            if (
                httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200
                and len(scrape_workers(url, workers)) == workers
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("relrec serve did not become ready")


def scrape_workers(url: str, workers: int, tries: int = 40) -> dict[str, str]:
    """/metrics text of each worker, by pid: fresh connections until each has answered (the
    server's own count where `relrec_server` started it with another, as an arm may)."""
    workers = WORKERS.get(url, workers)
    seen: dict[str, str] = {}
    for _ in range(tries):
        text = httpx.get(f"{url}/metrics", timeout=5.0, headers={"Connection": "close"}).text
        m = re.search(r'relrec_worker\{pid="(\d+)"\}', text)
        if m:
            seen[m.group(1)] = text
        if len(seen) >= workers:
            break
    return seen


def _metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(
        rf"^{re.escape(name)}(\{{{re.escape(labels)}\}})? (\S+)$"
        if labels
        else rf"^{re.escape(name)} (\S+)$",
        text,
        re.M,
    )
    return float(m.group(m.lastindex or 1)) if m else 0.0


def server_counters(texts: dict[str, str]) -> dict[str, float]:
    """Totals over workers: stage sums and counts, requests, batches, CPU seconds."""
    out: dict[str, float] = {}
    for text in texts.values():
        for stage in STAGES:
            for part in ("sum", "count"):
                key = f"{stage}_{part}"
                out[key] = out.get(key, 0.0) + _metric(
                    text, f"relrec_stage_seconds_{part}", f'stage="{stage}"'
                )
        out["batches"] = out.get("batches", 0.0) + _metric(text, "relrec_batch_size_count")
        out["batched"] = out.get("batched", 0.0) + _metric(text, "relrec_batch_size_sum")
        out["cpu_s"] = out.get("cpu_s", 0.0) + _metric(text, "process_cpu_seconds_total")
        for m in re.finditer(
            r'^relrec_request_seconds_(sum|count)\{method="GET",'
            r'route="/recommend/[^"]*",status="200"\} (\S+)$',
            text,
            re.M,
        ):
            key = f"request_{m.group(1)}"
            out[key] = out.get(key, 0.0) + float(m.group(2))
    return out


def stage_report(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per-request ms of each stage (batch stages amortised over the batch's requests)."""
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    n = max(d.get("request_count", 0.0), 1.0)
    report = {f"{s}_ms": 1000 * d[f"{s}_sum"] / n for s in STAGES}
    report["in_app_ms"] = 1000 * d.get("request_sum", 0.0) / n
    report["mean_batch"] = d["batched"] / max(d["batches"], 1.0)
    report["server_cpu_ms"] = 1000 * d["cpu_s"] / n
    report["requests"] = n
    return report
