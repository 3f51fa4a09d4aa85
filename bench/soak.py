"""Soak benchmark (issue 8): mixed GET/POST at half capacity; is memory flat after warm-up?

Starts the same stack as bench/serve.py (a real `redis-server` with AOF, `relrec serve` with
`--workers` processes, server and client pinned apart), measures capacity with a short closed
loop of GET /recommend, then drives an open loop at `--load` × capacity for `--minutes`:
a `--post-share` of the requests are POST /interactions of 1–5 events with unique event ids
(trained and new users), the rest GET /recommend. Every `--sample-s` it records the resident
memory of each API worker (/proc/PID/status VmRSS) and Redis's `used_memory` and RSS.

Redis holds data that grows by design (the log stream, idempotency markers, new users'
histories), so the soak sets the retention knobs to small values (`--log-max-len`,
`--idempotency-ttl-s`) and draws users from a fixed pool: in steady state every structure is
bounded, and memory that still grows after warm-up is a leak, not data.

    python bench/soak.py --minutes 30 --items 100000 --cache runs/catalogues
    python bench/soak.py --quick --cache /tmp/cat      # ~30 s; run by the tests
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from catalogue import CatalogueSpec, build_catalogue  # noqa: E402
from loadgen import Connection, closed_loop, run_async  # noqa: E402
from serve import (  # noqa: E402
    make_users,
    relrec_server,
    scrape_workers,
    split_cores,
)

from models import artifact as art  # noqa: E402
from models.artifact_arrays import read_arrays  # noqa: E402
from tests.redis_process import redis_server  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc (no psutil needed)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post_bodies(artifact: Path, n_users: int, seed: int) -> list[bytes]:
    """A fixed pool of POST bodies: users from a bounded pool, items from the catalogue.

    Event ids are made unique at send time (`{n}` is formatted in), so that every POST stores
    new events and the log, histories and markers are exercised."""
    arrays = read_arrays(art.resolve_version_dir(artifact))
    rng = np.random.default_rng(seed)
    users = [str(u) for u in rng.choice(arrays.user_ids.ids, min(n_users, len(arrays.user_ids)))]
    users += [f"soak-new-{i}" for i in range(n_users // 5)]
    items = arrays.item_ids.ids
    bodies = []
    for i in range(256):
        user = users[i % len(users)]
        picks = rng.choice(len(items), int(rng.integers(1, 6)), replace=False)
        events = [
            {"user_id": user, "item_id": str(items[j]), "event_id": f"soak-{{n}}-{k}"}
            for k, j in enumerate(picks)
        ]
        bodies.append(json.dumps({"interactions": events}))
    return [b.encode() for b in bodies]


async def mixed_open_loop(
    url: str,
    gets: list[str],
    posts: list[bytes],
    rate: float,
    seconds: float,
    post_share: float,
    on_tick: Callable[[], None],
    tick_s: float,
) -> dict[str, float]:
    """Fixed-rate mixed requests; `on_tick()` runs every `tick_s` (memory samples)."""
    host, port = url.removeprefix("http://").split(":")
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(32):
        idle.put_nowait(await Connection.open(host, int(port)))
    counts = {"get": 0, "post": 0, "events": 0, "errors": 0, "overloaded": 0}
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    rng = np.random.default_rng(1)
    is_post = rng.random(int(rate * seconds) + 1) < post_share

    async def one(i: int, scheduled: float) -> None:
        conn = await idle.get()
        try:
            if is_post[i]:
                body = posts[i % len(posts)].replace(b"{n}", str(i).encode())
                status = await conn.post_json("/interactions", body)
                counts["post"] += 1
                counts["events"] += body.count(b'"event_id"')
            else:
                status = await conn.get(gets[i % len(gets)])
                counts["get"] += 1
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            status = 0
            conn = await Connection.open(host, int(port))
        statuses[status] = statuses.get(status, 0) + 1
        counts["errors"] += status not in (200, 429, 503)
        counts["overloaded"] += status in (429, 503)
        latencies.append(time.perf_counter() - scheduled)
        idle.put_nowait(conn)

    n = int(rate * seconds)
    t0 = time.perf_counter() + 0.05
    next_tick = t0
    tasks = set()
    for i in range(n):
        scheduled = t0 + i / rate
        if scheduled >= next_tick:
            on_tick()
            next_tick += tick_s
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=10.0)
    on_tick()
    ms = 1000 * np.asarray(latencies or [np.nan])
    return {
        **counts,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "achieved_rps": len(latencies) / (time.perf_counter() - t0),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def growth(samples: list[dict[str, float]], key: str, warmup_s: float) -> dict[str, float]:
    """After warm-up: first value, max, last, and the least-squares slope in MB per minute."""
    after = [s for s in samples if s["t"] >= warmup_s]
    if len(after) < 2:
        return {"first": float("nan"), "max": float("nan"), "last": float("nan"),
                "slope_mb_per_min": float("nan")}
    t = np.array([s["t"] for s in after]) / 60
    v = np.array([s[key] for s in after])
    slope = float(np.polyfit(t, v, 1)[0])
    return {"first": float(v[0]), "max": float(v.max()), "last": float(v[-1]),
            "slope_mb_per_min": slope}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--artifact", type=Path, help="serve this artifact instead of a catalogue")
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "catalogues")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--server-cores", type=int, default=1)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--warmup-minutes", type=float, default=5.0,
                   help="samples before this are warm-up, not judged")
    p.add_argument("--load", type=float, default=0.5, help="share of measured capacity")
    p.add_argument("--post-share", type=float, default=0.2)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--sample-s", type=float, default=10.0)
    p.add_argument("--log-max-len", type=int, default=20_000, help="RELREC_LOG_MAX_LEN")
    p.add_argument("--idempotency-ttl-s", type=int, default=120,
                   help="RELREC_IDEMPOTENCY_TTL_S")
    p.add_argument("--json", type=Path)
    p.add_argument("--quick", action="store_true", help="tiny catalogue, ~30 s")
    args = p.parse_args(argv)
    if args.quick:
        args.items, args.users, args.minutes, args.warmup_minutes = 2000, 200, 0.25, 0.1
        args.sample_s, args.log_max_len, args.post_share = 2.0, 1000, 0.5
    return args


def run(args: argparse.Namespace) -> dict[str, object]:
    spec = (CatalogueSpec(n_items=args.items, n_users=500, dim=16, n_memory=4, l_max=8,
                          max_history=12) if args.quick else CatalogueSpec(n_items=args.items))
    artifact = args.artifact or build_catalogue(spec, args.cache)
    server_cpus, client_cpus = split_cores(args.server_cores)
    env = {"RELREC_LOG_MAX_LEN": str(args.log_max_len),
           "RELREC_IDEMPOTENCY_TTL_S": str(args.idempotency_ttl_s)}
    print(f"server on CPUs {sorted(server_cpus)}, client on {sorted(client_cpus)}; "
          f"load average {os.getloadavg()[0]:.2f} before", flush=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        redis_server(Path(tmp), server_cpus) as (redis_url, redis_proc),
        relrec_server(artifact, redis_url, args.workers, server_cpus, env) as (url, _),
    ):
        os.sched_setaffinity(0, client_cpus)
        gets, _ = make_users(artifact, url, args.users, seed=0)
        posts = post_bodies(artifact, args.users, seed=0)
        capacity = run_async(closed_loop(url, gets, 32, 3.0 if args.quick else 15.0))["rps"]
        rate = max(1.0, args.load * capacity)
        pids = [int(p) for p in scrape_workers(url, args.workers)]
        client = redis.Redis.from_url(redis_url)
        samples: list[dict[str, float]] = []
        start = time.perf_counter()

        def sample() -> None:
            info = client.info("memory")
            row = {"t": time.perf_counter() - start,
                   "api_rss_mb": sum(rss_mb(p) for p in pids),
                   "redis_used_mb": info["used_memory"] / 2**20,
                   "redis_rss_mb": rss_mb(redis_proc.pid)}
            samples.append(row)
            print(f"t {row['t']:7.0f}s  api RSS {row['api_rss_mb']:7.1f} MB  redis used "
                  f"{row['redis_used_mb']:6.1f} MB  rss {row['redis_rss_mb']:6.1f} MB",
                  flush=True)

        print(f"capacity {capacity:.0f} req/s (closed loop, GET); soak at {rate:.0f} req/s, "
              f"{100 * args.post_share:.0f}% POST, {args.minutes} min", flush=True)
        traffic = run_async(mixed_open_loop(url, gets, posts, rate, 60 * args.minutes,
                                            args.post_share, sample, args.sample_s))
        log_len = client.xlen("relrec:log")
    warm = 60 * args.warmup_minutes
    result: dict[str, object] = {
        "capacity_rps": capacity, "rate": rate, "traffic": traffic, "log_len": log_len,
        "api_rss": growth(samples, "api_rss_mb", warm),
        "redis_used": growth(samples, "redis_used_mb", warm),
        "redis_rss": growth(samples, "redis_rss_mb", warm),
        "samples": samples, "load_after": os.getloadavg()[0],
    }
    print(f"traffic: {json.dumps(traffic)}; log stream length {log_len}")
    for key in ("api_rss", "redis_used", "redis_rss"):
        g = result[key]
        print(f"{key:10s} after warm-up: first {g['first']:.1f}  max {g['max']:.1f}  last "  # type: ignore[index]
              f"{g['last']:.1f} MB, slope {g['slope_mb_per_min']:+.3f} MB/min")  # type: ignore[index]
    print(f"load average {os.getloadavg()[0]:.2f} after")
    return result


def main() -> None:
    args = parse_args()
    result = run(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
