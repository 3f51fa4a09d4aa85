"""Latency and throughput of GET /recommend over real HTTP, micro-batching on and off.

    python bench/recommend_load.py ARTIFACT_DIR [--concurrency 1,8,32] [--seconds 10]
    python bench/recommend_load.py ARTIFACT_DIR --quick

Starts `uvicorn --factory service.app:create_app` (one worker) in a subprocess per
configuration, on a free port, with a throw-away SQLite history; drives it with a raw asyncio
HTTP/1.1 keep-alive client at a fixed concurrency (closed loop) for known and unknown users,
and reports requests/s and latency percentiles. Client and server share the machine's cores:
pin them or use a second machine for numbers you publish.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import artifact as art  # noqa: E402
from models.artifact_arrays import read_arrays  # noqa: E402
from tests.redis_process import free_port  # noqa: E402


def start_server(
    artifact: Path, env_extra: dict[str, str], workdir: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "RELREC_ARTIFACT_DIR": str(artifact),
        "RELREC_HISTORY_URL": f"sqlite:///{workdir / 'history.db'}",
        "RELREC_RELOAD_POLL_S": "0",
        "RELREC_LOG_LEVEL": "WARNING",
        **env_extra,
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "service.app:create_app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not become ready")


async def _one_connection(
    host: str,
    port: int,
    paths: list[str],
    start: int,
    step: int,
    deadline: float,
    latencies: list[float],
) -> int:
    """Keep-alive HTTP/1.1 on one raw connection; returns the count of non-200 answers.

    A raw asyncio client: httpx's pool costs more CPU per request than the server at high
    concurrency on a small machine, which would measure the client instead of the server.
    """
    reader, writer = await asyncio.open_connection(host, port)
    errors, i = 0, start
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(f"GET {paths[i % len(paths)]} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            errors += status != 200
            i += step
    finally:
        writer.close()
    return errors


async def drive(
    url: str, users: list[str], concurrency: int, seconds: float, k: int
) -> tuple[int, list[float], int]:
    host, port = url.removeprefix("http://").split(":")
    paths = [f"/recommend/{quote(u, safe='')}?k={k}" for u in users]
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    errors = await asyncio.gather(
        *(
            _one_connection(host, int(port), paths, w, concurrency, deadline, latencies)
            for w in range(concurrency)
        )
    )
    return len(latencies), latencies, sum(errors)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--candidates", type=int, default=200, help="RELREC_N_CANDIDATES")
    p.add_argument("--batch-sizes", default="8,1", help="RELREC_BATCH_MAX_SIZE values; 1 = off")
    p.add_argument("--threads", type=int, default=1, help="RELREC_ORT_THREADS/FAISS_THREADS")
    p.add_argument("--quick", action="store_true", help="concurrency 1,16 for 3 s each")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.quick:
        args.concurrency, args.seconds = "1,16", 3.0
    vdir = art.resolve_version_dir(args.artifact)
    ids = read_arrays(vdir).user_ids.to_list()
    rng = np.random.default_rng(0)
    users = [ids[i] for i in rng.choice(len(ids), min(2000, len(ids)), replace=False)]
    users += [f"unknown-{i}" for i in range(len(users) // 20)]  # a few cold users
    configs = {
        (f"batching on (max {b})" if b > 1 else "batching off"): {
            "RELREC_BATCH_MAX_SIZE": str(b),
            "RELREC_N_CANDIDATES": str(args.candidates),
        }
        for b in (int(x) for x in args.batch_sizes.split(","))
    }
    threads = {"RELREC_ORT_THREADS": str(args.threads), "RELREC_FAISS_THREADS": str(args.threads)}
    results = []
    print(
        f"artifact {vdir.name}; {args.seconds:.0f} s per point; k={args.k}; "
        f"{args.threads} ORT/FAISS thread(s); client and server on this machine"
    )
    for name, env in configs.items():
        with tempfile.TemporaryDirectory() as tmp:
            proc, url = start_server(args.artifact, {**env, **threads}, Path(tmp))
            try:
                for c in (int(x) for x in args.concurrency.split(",")):
                    asyncio.run(drive(url, users, c, 1.0, args.k))  # warm-up
                    n, lat, errors = asyncio.run(drive(url, users, c, args.seconds, args.k))
                    ms = 1000 * np.asarray(lat)
                    row = {
                        "config": name,
                        "concurrency": c,
                        "requests": n,
                        "errors": errors,
                        "rps": n / args.seconds,
                        "p50_ms": float(np.percentile(ms, 50)),
                        "p95_ms": float(np.percentile(ms, 95)),
                        "p99_ms": float(np.percentile(ms, 99)),
                    }
                    results.append(row)
                    print(
                        f"{name:22s} concurrency {c:3d}: {row['rps']:7.1f} req/s  "
                        f"p50 {row['p50_ms']:6.2f} ms  p95 {row['p95_ms']:6.2f} ms  "
                        f"p99 {row['p99_ms']:6.2f} ms  errors {errors}"
                    )
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
