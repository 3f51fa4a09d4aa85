"""Batch recommend (issue 22): one POST /recommend for 32 users against 32 GET /recommend.

Starts a real `redis-server` and `relrec serve` (one worker, as bench/serve.py does) over the
synthetic catalogue of bench/catalogue.py, then, in the same run, alternates rounds of the two
ways of asking for the same 32 trained users (sequential GETs on one keep-alive connection; one
POST), and reports users served per second and the server's CPU seconds per user of each (CPU
from /proc of the server process tree, so the load generator is not counted).

    python bench/batch_recommend.py --items 20000 --cache /tmp/cat
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.catalogue import CatalogueSpec, build_catalogue  # noqa: E402
from bench.serve import relrec_server  # noqa: E402
from models import artifact as art  # noqa: E402
from models.artifact_arrays import read_arrays  # noqa: E402
from tests.redis_process import redis_server  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its children (the uvicorn worker), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def rounds(url: str, users: list[str], k: int, n_rounds: int, pid: int) -> dict[str, float]:
    """Alternate the two ways for `n_rounds`; per way: users/s and server CPU s per user.

    Raw httpx, not `service.client`: the client parses every answer into pydantic models,
    client-side work inside the timed wall (users/s) that the two ways would pay unequally
    (32 parses against one), so it would measure the client as well as the server."""
    spent = {"get": [0.0, 0.0], "post": [0.0, 0.0]}  # wall, cpu
    with httpx.Client(base_url=url, timeout=30.0) as c:
        for _ in range(n_rounds):
            for way in ("get", "post"):
                cpu0, t0 = cpu_seconds(pid), time.perf_counter()
                if way == "get":
                    for u in users:
                        c.get(f"/recommend/{u}", params={"k": k}).raise_for_status()
                else:
                    c.post("/recommend", json={"users": users, "k": k}).raise_for_status()
                spent[way][0] += time.perf_counter() - t0
                spent[way][1] += cpu_seconds(pid) - cpu0
    n = n_rounds * len(users)
    return {
        f"{way}_{name}": value
        for way, (wall, cpu) in spent.items()
        for name, value in (("users_per_s", n / wall), ("cpu_ms_per_user", 1000 * cpu / n))
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--cache", type=Path, default=Path("runs/catalogues"))
    p.add_argument("--users", type=int, default=32)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--rounds", type=int, default=30)
    args = p.parse_args()
    root = build_catalogue(CatalogueSpec(n_items=args.items), args.cache)
    users = [str(u) for u in read_arrays(art.resolve_current(root)).user_ids.ids[: args.users]]
    workdir = Path(args.cache) / "redis-batch"
    workdir.mkdir(parents=True, exist_ok=True)
    with (
        redis_server(workdir) as (redis_url, _),
        relrec_server(root, redis_url, 1, os.sched_getaffinity(0), {}) as (url, proc),
    ):
        rounds(url, users, args.k, 3, proc.pid)  # warm up
        result = rounds(url, users, args.k, args.rounds, proc.pid)
    result = {k: round(v, 3) for k, v in result.items()}
    sys.stdout.write(json.dumps({"items": args.items, "users": args.users, **result}) + "\n")


if __name__ == "__main__":
    main()
