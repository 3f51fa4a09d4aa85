"""Micro-batch executors side by side (issues 7, 18): GET /recommend with RELREC_BATCH_EXECUTOR
"thread", "worker" and "inline", in one invocation.

One catalogue, one redis-server holding one set of POSTed histories, and one `relrec serve`
per executor, all started up front and pinned to the same server cores (a server that is not
being measured sleeps in epoll). The phases alternate between the servers: `--rounds` closed
loops T, I, T, I, ..., then each open-loop rate for T and for I, so that the drift of the
machine's other load falls on both. Reports req/s, latency, worker CPU per request and mean
micro-batch per executor and the ratio of each to the first executor; `--profile` adds one
more closed loop per executor under py-spy (not counted in the table).

    python bench/serve_executors.py --items 100000 --cache runs/catalogues --rates 50,300,600
    python bench/serve_executors.py --quick --cache /tmp/cat     # seconds; run by the tests
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import serve  # bench/serve.py: puts the repository root on sys.path
from loadgen import closed_loop, run_async
from profile_summary import summarise_profiles
from serve_arms import closed_rounds, one_at_a_time, open_rates, table

from models import artifact as art
from tests.redis_process import redis_server

EXECUTORS = ("thread", "worker", "inline")  # service.batching.EXECUTORS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = serve.build_parser(__doc__.split("\n\n")[0])
    p.add_argument(
        "--executors", default="thread,worker,inline", help="RELREC_BATCH_EXECUTOR values"
    )
    args = serve.parse_args(argv, p)
    args.executors = args.executors.split(",")
    if not set(args.executors) <= set(EXECUTORS) or len(set(args.executors)) < 2:
        p.error(f"--executors: two or more of {', '.join(EXECUTORS)}")
    return args


def profiles(
    args: argparse.Namespace, urls: dict[str, str], paths: list[str], client_cpus: set[int]
) -> dict[str, dict[str, float]]:
    """One more closed loop per executor under py-spy: share of worker samples per part."""
    out = {}
    for mode, url in urls.items():
        where = args.profile / mode
        pids = list(serve.scrape_workers(url, args.workers))
        with serve.py_spy(pids, args.closed_seconds, where, client_cpus):
            run_async(closed_loop(url, paths, args.concurrency, args.closed_seconds))
        out[mode] = summarise_profiles(sorted(where.glob("worker-*.txt")))
    return out


def main() -> None:
    args = parse_args()
    artifact = serve.resolve_artifact(args)
    server_cpus, client_cpus = serve.split_cores(args.server_cores)
    manifest = art.read_manifest(art.resolve_version_dir(artifact))
    load_before = os.getloadavg()
    print(f"machine: {serve.machine()}; load average {load_before} before")
    print(
        f"artifact {manifest.version}: {manifest.counts.items} items, "
        f"C={args.candidates or 'from the manifest'}; "
        f"per executor {args.workers} workers, all servers + redis on CPUs "
        f"{sorted(server_cpus)}, client on {sorted(client_cpus)}"
    )
    env = {"RELREC_BATCH_MAX_SIZE": str(args.batch_max_size)}
    if args.candidates is not None:  # else each artifact's own C (manifest `retrieval`)
        env["RELREC_N_CANDIDATES"] = str(args.candidates)
    result: dict[str, object] = {"executors": args.executors}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        redis_url, _ = stack.enter_context(redis_server(Path(tmp), server_cpus))
        urls = {}
        for mode in args.executors:
            extra = {**env, "RELREC_BATCH_EXECUTOR": mode}
            server = serve.relrec_server(artifact, redis_url, args.workers, server_cpus, extra)
            urls[mode], _ = stack.enter_context(server)
        os.sched_setaffinity(0, client_cpus)
        # One set of histories in the one Redis serves every executor.
        paths, posted = serve.make_users(artifact, urls[args.executors[0]], args.users, args.seed)
        result["users"] = {"paths": len(paths), "posted_interactions": posted}
        for url in urls.values():
            run_async(closed_loop(url, paths, args.concurrency, args.warmup))
        result["closed_loop"] = closed_rounds(args, urls, paths, args.healthz_seconds)
        result["open_loop"] = open_rates(args, urls, paths)
        if args.single_seconds > 0:
            result["single"] = one_at_a_time(args, urls, paths)
        if args.profile is not None:
            result["profile"] = profiles(args, urls, paths, client_cpus)
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    print(table(result, args.executors))
    for mode, shares in result.get("profile", {}).items():  # type: ignore[attr-defined]
        print(f"profile {mode}: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in shares.items()))
    print(f"load average {os.getloadavg()} after")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
