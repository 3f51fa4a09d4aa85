"""Serving benchmark (issue 7): throughput and latency of GET /recommend over real HTTP.

Starts a real `redis-server` (free port, temp dir: `tests.redis_process`) and `relrec serve`
(uvicorn, `--workers` processes, history_url redis://...) over a synthetic catalogue
(bench/catalogue.py) or a given artifact, pins the server side (workers and Redis) to some
cores and this load generator to the others, warms up, then measures on loopback, each phase
bounded in time:

- closed loop: `--concurrency` keep-alive connections, each sending its next request when the
  last one is answered, for GET /recommend/{user} and for GET /healthz on the same app (the
  HTTP ceiling: framework, middleware and sockets, no model), reported as a ratio;
- open loop: requests sent on a fixed schedule at each of `--rates`, whatever the answers do;
  latency is measured from the *scheduled* send time, so a stalled server is charged for the
  requests it delayed (no coordinated omission). p50, p99, p99.9;
- one request at a time (`--single-seconds`): one connection, each request sent when the last
  is answered: the unloaded latency, with no queueing and no send schedule (an open loop's
  send can leave up to a millisecond late: the event loop's timers have that resolution);
- per stage (history, retrieval, re-rank, serialize) from the service's own /metrics, scraped
  from every worker before and after the closed loop, and the server's CPU time per request.

Side by side in one run (issue 18; `bench/serve_arms.py` alternates the phases between the
servers): the artifact's own C (its manifest's choice, or `--candidates`), C = 200
(`--compare-c`) and, with `--before TREE`, the code of an earlier checkout at the same C, each
with its own /healthz ratio; recall@10 against exhaustive exact scoring at each C comes last.

Users are mixed: trained users, trained users with freshly POSTed history and new users known
only by POSTed history. Optionally profiles the first server's workers with py-spy.

    python bench/serve.py --items 100000 --cache runs/catalogues
    git archive BASE | tar -x -C /tmp/before && python bench/serve.py --before /tmp/before
    python bench/serve.py --quick --cache /tmp/cat     # seconds; run by the tests
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from catalogue import CatalogueSpec, build_catalogue  # noqa: E402
from loadgen import closed_loop, run_async  # noqa: E402
from profile_summary import summarise_profiles  # noqa: E402
from recall import recall_at_chosen  # noqa: E402
from serve_server import (  # noqa: E402
    pinned,
    relrec_server,
    scrape_workers,
    server_counters,
    split_cores,
    stage_report,
)

from models import artifact as art  # noqa: E402
from models.artifact_arrays import read_arrays, user_history  # noqa: E402
from service.loader import FALLBACK_N_CANDIDATES  # noqa: E402
from tests.redis_process import redis_server  # noqa: E402

__all__ = ["relrec_server", "scrape_workers", "server_counters", "split_cores", "stage_report"]

# -- users ------------------------------------------------------------------------------------


def make_users(artifact: Path, url: str, n: int, seed: int) -> tuple[list[str], int]:
    """A shuffled pool: 70% trained users, 15% trained + POSTed history, 15% new users with
    only POSTed history (10 items each, from a trained user's history). Returns (paths, posts)."""
    arrays = read_arrays(art.resolve_version_dir(artifact))
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(arrays.user_ids), min(n, len(arrays.user_ids)), replace=False)
    known = [str(arrays.user_ids.ids[r]) for r in rows]
    n_posted = len(known) * 15 // 100
    new = [f"bench-new-{i}" for i in range(n_posted)]
    batch = []
    for i, user in enumerate(known[:n_posted] + new):
        donor = rows[(i * 7919) % len(rows)]
        items = user_history(arrays, int(donor))[:10]
        batch += [{"user_id": user, "item_id": str(arrays.item_ids.ids[j])} for j in items]
    for s in range(0, len(batch), 500):
        r = httpx.post(
            f"{url}/interactions", json={"interactions": batch[s : s + 500]}, timeout=30.0
        )
        r.raise_for_status()
    users = known + new
    rng.shuffle(users)
    return [f"/recommend/{u}?k=10" for u in users], len(batch)


# -- orchestration ----------------------------------------------------------------------------


@contextmanager
def py_spy(pids: list[str], seconds: float, out: Path | None, cpus: set[int]) -> Iterator[None]:
    """py-spy record (collapsed stacks) of each worker for `seconds`, when `out` is given."""
    procs = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.exists():
            raise SystemExit("--profile needs py-spy: pip install -e '.[bench]'")
        procs = [
            subprocess.Popen(
                [
                    str(spy),
                    "record",
                    "--pid",
                    pid,
                    "--duration",
                    str(int(seconds)),
                    "--rate",
                    "250",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--output",
                    str(out / f"worker-{pid}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=pinned(cpus),
            )
            for pid in pids
        ]
    try:
        yield
    finally:
        for p in procs:
            p.wait(timeout=seconds + 60)


def machine() -> str:
    model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    return f"{model}, {os.cpu_count()} CPUs, {mem:.0f} GiB"


def arms(args: argparse.Namespace, served_c: int) -> dict[str, tuple[dict[str, str], Path]]:
    """label -> (environment, source tree) of each server measured side by side: the served C
    (the manifest's, or `--candidates`), `--compare-c` (C = 200 by default) and, with
    `--before`, the code of an earlier checkout at the served C."""
    env = {"RELREC_BATCH_MAX_SIZE": str(args.batch_max_size)}
    if args.candidates is not None:  # else the artifact's own C (manifest `retrieval`)
        env["RELREC_N_CANDIDATES"] = str(args.candidates)
    ours = {**env, **({"RELREC_BATCH_EXECUTOR": args.executor} if args.executor else {})}
    out = {f"C={served_c}": (ours, ROOT)}
    if args.compare_c and args.compare_c != served_c:
        out[f"C={args.compare_c}"] = ({**ours, "RELREC_N_CANDIDATES": str(args.compare_c)}, ROOT)
    if args.before is not None:
        out[f"before, C={served_c}"] = (env, args.before.resolve())
    return out


def measure(
    args: argparse.Namespace,
    artifact: Path,
    server_cpus: set[int],
    client_cpus: set[int],
    served_c: int,
) -> dict[str, Any]:
    """Every arm started up front, then the phases alternated between them (serve_arms)."""
    result: dict[str, Any] = {}
    servers = arms(args, served_c)
    result["arms"] = {k: {"env": e, "source": str(src)} for k, (e, src) in servers.items()}
    import serve_arms  # imports this module: not at the top

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        redis_url, _ = stack.enter_context(redis_server(Path(tmp), server_cpus))
        urls = {}
        for label, (env, source) in servers.items():
            server = relrec_server(artifact, redis_url, args.workers, server_cpus, env, source)
            urls[label], _ = stack.enter_context(server)
        os.sched_setaffinity(0, client_cpus)
        # One set of histories in the one Redis serves every arm.
        paths, posted = make_users(artifact, next(iter(urls.values())), args.users, args.seed)
        result["users"] = {"paths": len(paths), "posted_interactions": posted}
        for url in urls.values():
            run_async(closed_loop(url, paths, args.concurrency, args.warmup))
            run_async(closed_loop(url, ["/healthz"], args.concurrency, min(args.warmup, 2.0)))
        health_s = args.healthz_seconds or args.closed_seconds / 2
        result["closed_loop"] = serve_arms.closed_rounds(args, urls, paths, health_s)
        result["open_loop"] = serve_arms.open_rates(args, urls, paths)
        if args.single_seconds > 0:
            result["single"] = serve_arms.one_at_a_time(args, urls, paths)
        if args.profile is not None:  # the first arm, one more closed loop, not in the table
            url = next(iter(urls.values()))
            pids = list(scrape_workers(url, args.workers))
            with py_spy(pids, args.closed_seconds, args.profile, client_cpus):
                run_async(closed_loop(url, paths, args.concurrency, args.closed_seconds))
    if args.profile is not None:
        result["profile"] = summarise_profiles(sorted(args.profile.glob("worker-*.txt")))
        for name, share in result["profile"].items():
            print(f"profile {name:34s} {100 * share:5.1f}% of worker samples")
    return result


def build_parser(description: str = __doc__.split("\n\n")[0]) -> argparse.ArgumentParser:
    """The options (bench/serve_executors.py adds its own to these)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--artifact", type=Path, help="serve this artifact instead of a catalogue")
    p.add_argument("--items", type=int, default=100_000, help="synthetic catalogue size")
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "catalogues")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--server-cores", type=int, default=1, help="cores for workers and Redis")
    p.add_argument(
        "--candidates",
        type=int,
        default=None,
        help="RELREC_N_CANDIDATES (default: unset, the artifact's own C from its manifest)",
    )
    p.add_argument(
        "--compare-c",
        type=int,
        default=200,
        help="also serve this C side by side (the old default, 200); 0: only the served C",
    )
    p.add_argument(
        "--before",
        type=Path,
        help="also serve the code of this source tree (e.g. `git archive` of an earlier "
        "commit) at the served C, side by side: the before of an optimisation",
    )
    p.add_argument(
        "--executor",
        choices=("thread", "worker", "inline"),
        help="RELREC_BATCH_EXECUTOR of this tree's servers (default: the setting's default)",
    )
    p.add_argument("--rounds", type=int, default=1, help="closed loops per arm, alternated")
    p.add_argument(
        "--healthz-seconds", type=float, default=0.0, help="per round (default: half a loop)"
    )
    p.add_argument(
        "--recall-users",
        type=int,
        default=100,
        help="users for recall@10 at the served C against exhaustive scoring; 0: skip",
    )
    p.add_argument("--batch-max-size", type=int, default=8, help="RELREC_BATCH_MAX_SIZE")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--closed-seconds", type=float, default=20.0)
    p.add_argument("--rates", default="50,600")
    p.add_argument("--rate-seconds", type=float, default=20.0)
    p.add_argument("--single-seconds", type=float, default=5.0,
                   help="one request at a time, per arm: the unloaded latency (0: skip)")
    p.add_argument("--profile", type=Path, help="py-spy the workers in the closed loop, here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    p.add_argument("--quick", action="store_true", help="tiny catalogue, ~1 s per phase")
    return p


def parse_args(
    argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None
) -> argparse.Namespace:
    args = (parser or build_parser()).parse_args(argv)
    if args.quick:
        args.items, args.users, args.warmup, args.closed_seconds = 2000, 200, 0.5, 1.0
        args.rates, args.rate_seconds, args.concurrency = "20,100", 1.0, 8
        args.single_seconds = min(args.single_seconds, 1.0)
    return args


def resolve_artifact(args: argparse.Namespace) -> Path:
    """`--artifact`, else the synthetic catalogue of `--items` (built once, cached)."""
    if args.artifact is not None:
        return Path(args.artifact)
    spec = (
        CatalogueSpec(n_items=args.items, n_users=500, dim=16, n_memory=4, l_max=8, max_history=12)
        if args.quick
        else CatalogueSpec(n_items=args.items)
    )
    return build_catalogue(spec, args.cache)


def main() -> None:
    args = parse_args()
    artifact = resolve_artifact(args)
    server_cpus, client_cpus = split_cores(args.server_cores)
    manifest = art.read_manifest(art.resolve_version_dir(artifact))
    load_before = os.getloadavg()
    print(f"machine: {machine()}; load average {load_before} before")
    print(
        f"artifact {manifest.version}: {manifest.kind}, {manifest.counts.items} items, "
        f"{manifest.counts.users} users, d={manifest.dim}, N={manifest.n_memory}, "
        f"L_max={manifest.l_max}, index {manifest.index.factory}; served C="
        f"{args.candidates or 'from the manifest'} (export chose "
        f"{manifest.retrieval.n_candidates if manifest.retrieval else 'nothing'})"
    )
    print(
        f"server: relrec serve, {args.workers} workers + redis-server pinned to CPUs "
        f"{sorted(server_cpus)}; client pinned to CPUs {sorted(client_cpus)}"
        f"{' (shared: one CPU only)' if server_cpus == client_cpus else ''}; loopback; "
        f"1 ORT + 1 FAISS thread per worker; micro-batches up to {args.batch_max_size}"
    )
    chosen = manifest.retrieval.n_candidates if manifest.retrieval else FALLBACK_N_CANDIDATES
    served_c = args.candidates or chosen
    result = measure(args, artifact, server_cpus, client_cpus, served_c)
    result.update(
        {
            "machine": machine(),
            "server_cpus": sorted(server_cpus),
            "client_cpus": sorted(client_cpus),
            "artifact": manifest.version,
            "artifact_dir": str(art.resolve_version_dir(artifact)),
            "items": manifest.counts.items,
            "candidates": served_c,
            "workers": args.workers,
            "load_before": load_before,
            "load_after": os.getloadavg(),
        }
    )
    import serve_arms

    print(serve_arms.table(result, list(result["closed_loop"])))
    print(f"load average {os.getloadavg()} after")
    if args.recall_users:  # after the timed phases: exhaustive scoring is CPU-heavy
        result["recall"] = {}
        for c in dict.fromkeys(int(a.split("C=")[1]) for a in result["closed_loop"]):
            r = recall_at_chosen(artifact, args.recall_users, c)
            result["recall"][str(c)] = r
            print(
                f"recall@10 at C={r['C']}{' (the served C)' if c == served_c else ''}, "
                f"{r['knob']} against exhaustive exact scoring, {r['users']} "
                f"users: {r['recall_at_10']:.4f}"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
