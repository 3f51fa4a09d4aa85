"""The per-request work outside the model, before and after (issue 18), side by side.

One catalogue, one redis-server holding one set of POSTed histories, and one `relrec serve`
per *arm*, all started up front and pinned to the same server cores, the phases alternated
between them (bench/serve_arms.py): closed loops with /healthz on the same server, then the
open-loop rates. An arm is this tree with some RELREC_* variables (`--arm LABEL:VAR=VALUE,...`,
e.g. `--arm "no fast path:RELREC_FAST_RECOMMEND=false"`; `WORKERS=1` and `ARTIFACT=DIR` set
that arm's worker count and artifact) or, with `--before TREE`, the code of an earlier
checkout. `--profile DIR` adds one closed loop per arm under py-spy and splits the
arm's server CPU per request into stages by the share of samples (bench/profile_summary.py):
ms per request of HTTP parsing, the event loop, the middleware, FastAPI, the hand-off, the
history store, retrieval, re-rank and serialisation.

    git archive e5b8c7d | tar -x -C runs/before
    python bench/serve_floor.py --items 20000 --before runs/before \\
        --arm "no fast path:RELREC_FAST_RECOMMEND=false" --profile runs/profile-floor
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import serve  # bench/serve.py: puts the repository root on sys.path
from loadgen import closed_loop, run_async
from profile_summary import summarise_profiles
from serve_arms import closed_rounds, one_at_a_time, open_rates, table

from models import artifact as art
from tests.redis_process import redis_server

ARM_OPTIONS = ("WORKERS", "ARTIFACT")  # --arm variables the bench reads, not the server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = serve.build_parser(__doc__.split("\n\n")[0])
    p.add_argument(
        "--arm",
        action="append",
        default=[],
        help='"LABEL:VAR=VALUE,VAR=VALUE": one more server of this tree with these variables; '
        "two are the bench's own: WORKERS=N (uvicorn workers of that arm) and ARTIFACT=DIR "
        "(another export of the same catalogue and users, e.g. another index)",
    )
    p.add_argument("--after-label", default="after", help="label of this tree's default arm")
    p.add_argument(
        "--before-last",
        action="store_true",
        help="measure the --before arm last in every phase (default: first), to see the order",
    )
    args = serve.parse_args(argv, p)
    arms = {}
    for spec in args.arm:
        label, _, assignments = spec.partition(":")
        pairs = [a.split("=", 1) for a in assignments.split(",") if a]
        if not label or any(len(pair) != 2 for pair in pairs):
            p.error(f"--arm {spec!r}: expected LABEL:VAR=VALUE,...")
        arms[label] = dict(pairs)
    args.arms = arms
    return args


def arms(args: argparse.Namespace) -> dict[str, tuple[dict[str, str], Path]]:
    """label -> (environment, source tree): before (if any; or last), this tree, each `--arm`."""
    env = {"RELREC_BATCH_MAX_SIZE": str(args.batch_max_size)}
    if args.candidates is not None:  # else the artifact's own C (manifest `retrieval`)
        env["RELREC_N_CANDIDATES"] = str(args.candidates)
    out: dict[str, tuple[dict[str, str], Path]] = {}
    if args.before is not None and not args.before_last:
        out["before"] = (env, args.before.resolve())
    out[args.after_label] = (env, serve.ROOT)
    for label, extra in args.arms.items():
        out[label] = ({**env, **extra}, serve.ROOT)
    if args.before is not None and args.before_last:
        out["before"] = (env, args.before.resolve())
    return out


def stage_ms(shares: dict[str, float], cpu_ms: float) -> dict[str, float]:
    """The arm's server CPU per request split by the profile's share of samples per part."""
    return {part: share * cpu_ms for part, share in shares.items()}


def profiles(
    args: argparse.Namespace, urls: dict[str, str], paths: list[str], client_cpus: set[int]
) -> dict[str, dict[str, Any]]:
    """One more closed loop per arm under py-spy: share of worker samples per part, and the
    server CPU per request of that loop (from the workers' own /metrics)."""
    out = {}
    for label, url in urls.items():
        where = args.profile / label.replace(" ", "-").replace(",", "")
        workers = serve.scrape_workers(url, args.workers)
        before = serve.server_counters(workers)
        with serve.py_spy(list(workers), args.closed_seconds, where, client_cpus):
            run_async(closed_loop(url, paths, args.concurrency, args.closed_seconds))
        after = serve.server_counters(serve.scrape_workers(url, args.workers))
        cpu_ms = serve.stage_report(before, after)["server_cpu_ms"]
        shares = summarise_profiles(sorted(where.glob("worker-*.txt")))
        out[label] = {"server_cpu_ms": cpu_ms, "shares": shares, "ms": stage_ms(shares, cpu_ms)}
    return out


def stage_table(prof: dict[str, dict[str, Any]]) -> str:
    """Markdown: ms of server CPU per request per part (share × CPU per request), per arm."""
    labels = list(prof)
    parts = list(dict.fromkeys(p for arm in prof.values() for p in arm["ms"]))
    lines = [
        f"| CPU ms per request (py-spy share × server CPU) | {' | '.join(labels)} |",
        "|---" + "|---:" * len(labels) + "|",
    ]
    for part in parts:
        cells = [f"{prof[a]['ms'].get(part, 0.0):.3f}" for a in labels]
        lines.append(f"| {part} | {' | '.join(cells)} |")
    total = [f"{prof[a]['server_cpu_ms']:.3f}" for a in labels]
    lines.append(f"| **server CPU per request** | {' | '.join(total)} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    artifact = serve.resolve_artifact(args)
    server_cpus, client_cpus = serve.split_cores(args.server_cores)
    manifest = art.read_manifest(art.resolve_version_dir(artifact))
    load_before = os.getloadavg()
    servers = arms(args)
    print(f"machine: {serve.machine()}; load average {load_before} before")
    print(
        f"artifact {manifest.version}: {manifest.counts.items} items, index "
        f"{manifest.index.factory}, C={args.candidates or 'from the manifest'}; per arm "
        f"{args.workers} workers, all servers + redis on CPUs {sorted(server_cpus)}, client "
        f"on {sorted(client_cpus)}; arms: "
        + "; ".join(f"{k} {e} {s}" for k, (e, s) in servers.items())
    )
    result: dict[str, Any] = {
        "arms": {k: {"env": e, "source": str(s)} for k, (e, s) in servers.items()}
    }
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        redis_url, _ = stack.enter_context(redis_server(Path(tmp), server_cpus))
        urls = {}
        for label, (env, source) in servers.items():
            own = {k: v for k, v in env.items() if k not in ARM_OPTIONS}
            server = serve.relrec_server(
                Path(env.get("ARTIFACT", artifact)),
                redis_url,
                int(env.get("WORKERS", args.workers)),
                server_cpus,
                own,
                source,
            )
            urls[label], _ = stack.enter_context(server)
        os.sched_setaffinity(0, client_cpus)
        paths, posted = serve.make_users(artifact, next(iter(urls.values())), args.users, args.seed)
        result["users"] = {"paths": len(paths), "posted_interactions": posted}
        for url in urls.values():
            run_async(closed_loop(url, paths, args.concurrency, args.warmup))
            run_async(closed_loop(url, ["/healthz"], args.concurrency, min(args.warmup, 2.0)))
        health_s = args.healthz_seconds or args.closed_seconds / 2
        result["closed_loop"] = closed_rounds(args, urls, paths, health_s)
        result["open_loop"] = open_rates(args, urls, paths)
        if args.single_seconds > 0:
            result["single"] = one_at_a_time(args, urls, paths)
        if args.profile is not None:
            result["profile"] = profiles(args, urls, paths, client_cpus)
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    print(table(result, list(servers)))
    if "profile" in result:
        print(stage_table(result["profile"]))
    print(f"load average {os.getloadavg()} after")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
