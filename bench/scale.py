"""Catalogue scale (issue 21): export, artifact size, memory per worker, ready time, recall.

For each catalogue size, a planted HLR (bench/catalogue.py's `plant_model`) is exported with
the index that `--index` and `--index-memory-mb` choose (training/index_builder.py), then
served by `relrec serve` with 1 and then 2 uvicorn workers (SQLite history). Reported:

- export time (the retrieval choice of training/candidates.py is skipped unless `--choose`:
  its exhaustive HLR scoring costs ~35 µs a pair on the shared 2-core machine) and the
  artifact's size, by file;
- ready time (process start to /readyz 200 with every worker answering);
- each worker's memory after `--requests` requests, from /proc/PID/smaps: its own heap
  (anonymous: interpreter, sessions, id maps), the artifact's mapped pages (resident, and
  PSS: split among the workers mapping them) and the libraries; what the workers hold
  together is their heaps, plus the artifact's pages and the libraries once;
- recall@10 of the served two-stage result (the index's candidates re-ranked by the scorer)
  against exhaustive exact scoring, on `--recall-users` sampled users, at the C, efSearch or
  nprobe the service uses for the version;
- closed-loop req/s of one client (side by side, 1 and 2 workers; a latency figure, not
  capacity);
- with `--capacity-seconds S`: the capacity of every catalogue, side by side in one run: one
  server per catalogue (2 workers, and a redis-server of its own, all pinned to the first CPU
  as in bench/serve.py), the load generator on the others, closed-loop rounds of S seconds
  alternated between the catalogues, each followed by /healthz on the same server, so that the
  ratio of one catalogue's req/s to another's (issue 21: 10M items >= 0.5x 100k) is measured
  on the same core at the same time; with `--milvus` too, each catalogue is also served through
  the Milvus retriever (RELREC_RETRIEVER=milvus on the Lite file), as one more arm;
- with `--id-maps both`: every serving run twice on the same version, first with the id maps
  built as dicts from the JSON lists (as a version exported before issue 21 is served), then
  with the mapped id maps (models/mapped_ids.py), side by side;
- with `--milvus FILE`: the publish time into Milvus Lite and the share of sampled users whose
  served top 10 through Milvus equals the local index's.

    python bench/scale.py --items 100000,1000000 --index-memory-mb 256 --cache runs/scale

Catalogues are cached under `--cache` by size and index settings; a second run serves them
again without exporting.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.catalogue import CatalogueSpec, plant_model  # noqa: E402
from bench.loadgen import closed_loop, run_async  # noqa: E402
from bench.serve import relrec_server, scrape_workers, split_cores  # noqa: E402
from bench.serve_arms import closed_rounds  # noqa: E402
from models import artifact as art  # noqa: E402
from models.mapped_ids import write_ids  # noqa: E402
from service.loader import load_artifact  # noqa: E402
from service.retriever import Retriever  # noqa: E402
from tests.redis_process import redis_server  # noqa: E402
from training.candidates import exact_distances, recall_at, sample_users  # noqa: E402
from training.exporter import export  # noqa: E402
from training.index_builder import INDEX_KINDS  # noqa: E402

INFO = "scale.json"


def smaps(pid: int | str, vdir: Path) -> dict[str, int]:
    """A process's memory from /proc/PID/smaps, in bytes: its own heap (anonymous), the
    artifact's mapped files (RSS, and PSS: split among the workers mapping them), and the
    other file mappings (the libraries, shared with every Python process of the venv)."""
    out = {"anonymous": 0, "artifact_rss": 0, "artifact_pss": 0, "libs_rss": 0}
    where = None
    version = str(vdir.resolve())
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if not parts[0].endswith(":"):  # a mapping's header: address perms offset dev inode path
            path = parts[5] if len(parts) > 5 else ""
            where = "artifact" if path.startswith(version) else "libs" if path.startswith("/") \
                else "anon"
            continue
        if len(parts) < 2 or not parts[1].isdigit():  # VmFlags, THPeligible ...
            continue
        key, value = parts[0].rstrip(":"), int(parts[1]) * 1024
        if key == "Anonymous":
            out["anonymous"] += value
        elif key == "Rss" and where in ("artifact", "libs"):
            out[f"{where}_rss"] += value
        elif key == "Pss" and where == "artifact":
            out["artifact_pss"] += value
    return out


def held(memory: list[dict[str, int]]) -> int:
    """What N workers hold together: their heaps, the artifact pages once (the PSS sum), and
    the libraries once."""
    return (sum(m["anonymous"] + m["artifact_pss"] for m in memory)
            + max(m["libs_rss"] for m in memory))


def build(spec: CatalogueSpec, index: str, memory_mb: float | None, choose: bool,
          cache: Path) -> Path:
    """The artifacts root of a catalogue exported with this index choice, built once."""
    root = cache / f"{spec.name}-index{index}-mb{memory_mb}-choose{int(choose)}"
    if (root / INFO).is_file():
        return root
    t0 = time.perf_counter()
    model, log = plant_model(spec, np.random.default_rng(spec.seed))
    t1 = time.perf_counter()
    vdir = export(model, log, root, index=index, index_memory_mb=memory_mb,
                  ef_construction=spec.ef_construction, choose_retrieval=choose,
                  metrics={"synthetic": True})
    t2 = time.perf_counter()
    sizes = {p.name: p.stat().st_size for p in vdir.iterdir()}
    info = {"plant_s": round(t1 - t0, 1), "export_s": round(t2 - t1, 1), "sizes": sizes,
            "artifact_bytes": sum(sizes.values()), "version": vdir.name}
    (root / INFO).write_text(json.dumps(info, indent=2) + "\n")
    return root


def served_recall(root: Path, n_users: int) -> dict[str, float | int | None]:
    """recall@10 of the service's two-stage result against exhaustive exact scoring."""
    loaded = load_artifact(art.resolve_current(root), ort_threads=1, faiss_threads=1)
    users = sample_users(loaded.arrays, loaded.l_max, n_users, seed=1)
    exact = exact_distances(loaded.session, users, loaded.n_items)
    retriever = Retriever(loaded.index, loaded.arrays.items, loaded.arrays.keys,
                          loaded.arrays.memories, loaded.n_candidates)
    r = recall_at(retriever, users, exact, loaded.n_candidates)
    return {"recall_at_10": round(r, 4), "users": len(users), "c": loaded.n_candidates,
            "ef_search": loaded.ef_search}


def milvus_side_by_side(root: Path, uri: str, n_users: int) -> dict[str, float | int]:
    """Publish into Milvus (Lite: a local file) and compare the served top 10 (candidates
    re-ranked by the scorer) with the local index's on `n_users` sampled users."""
    from service.ranker import Ranker
    from service.retriever_milvus import disconnect, open_index, publish

    vdir = art.resolve_current(root)
    t0 = time.perf_counter()
    publish(vdir, uri)
    publish_s = time.perf_counter() - t0
    loaded = load_artifact(vdir, ort_threads=1, faiss_threads=1)
    remote = open_index(uri, "", loaded.version, loaded.dim, loaded.n_items,
                        loaded.manifest.index.metric, loaded.ef_search)
    users = sample_users(loaded.arrays, loaded.l_max, n_users, seed=2)
    ranker = Ranker(loaded.session, loaded.l_max, loaded.has_attention)
    tops = []
    for index in (loaded.index, remote):
        retriever = Retriever(index, loaded.arrays.items, loaded.arrays.keys,
                              loaded.arrays.memories, loaded.n_candidates)
        rows = []
        for s in range(0, len(users), 32):
            sl = slice(s, s + 32)
            cands = retriever.candidates(users.vecs[sl], users.hists[sl], users.seen[sl])
            ranked = ranker.rank(users.vecs[sl], users.hist_rows[sl], users.hist_mask[sl],
                                 cands, [10] * len(cands))
            rows += [r.rows.tolist() for r in ranked]
        tops.append(rows)
    same = sum(a == b for a, b in zip(*tops, strict=True))
    disconnect(uri)  # a Lite file admits one process: the servers of --capacity-seconds next
    return {"publish_s": round(publish_s, 1), "users": len(users),
            "same_top10": round(same / len(users), 4)}


def serve(root: Path, workers: int, requests: int) -> dict[str, object]:
    """Ready time, req/s of one closed-loop client, and every worker's memory after.

    PSS splits a page among every process mapping it, this one included: the bench must not
    map the version itself while it measures (an export or recall check in this process
    would), or the workers' PSS would leave out the bench's share."""
    vdir = art.resolve_current(root)
    gc.collect()
    if str(vdir.resolve()) in Path("/proc/self/maps").read_text():
        raise RuntimeError(f"this process maps {vdir}: run the bench again (cached) to "
                           f"measure the workers alone")
    from models.artifact_arrays import read_arrays

    ids = read_arrays(vdir).user_ids.to_list()  # plain strs: this process maps nothing
    paths = [f"/recommend/{ids[(i * 7919) % len(ids)]}?k=10" for i in range(requests)]
    history = f"sqlite:///{root / f'history-{workers}.db'}"
    t0 = time.perf_counter()
    with relrec_server(root, history, workers, set(range(os.cpu_count() or 1)), {}) as (url, _):
        ready_s = time.perf_counter() - t0
        with httpx.Client(base_url=url, timeout=60.0) as client:
            t1 = time.perf_counter()
            for path in paths:
                client.get(path).raise_for_status()
            rps = requests / (time.perf_counter() - t1)
        pids = list(scrape_workers(url, workers))
        memory = {pid: smaps(pid, vdir) for pid in pids}
    return {"workers": workers, "ready_s": round(ready_s, 1), "req_per_s": round(rps, 1),
            "memory": memory}


def capacity(arms: dict[str, tuple[Path, dict[str, str]]],
             args: argparse.Namespace) -> dict[str, dict]:
    """Closed-loop req/s of each catalogue's server, rounds alternated between them.

    Every server (2 workers) and its redis-server share the first CPU and the client runs on
    the others, as bench/serve.py measures "per core": the catalogues then compete for
    nothing but that core's time, one round at a time, and the machine's drift falls on
    every catalogue alike. The users are the planted ones (`u0`...), the same ids in every
    catalogue; nothing is posted, so each request reads an empty recent history. An arm is a
    catalogue and the RELREC_* variables of its server (the Milvus retriever, with --milvus)."""
    server_cpus, client_cpus = split_cores(1)
    rng = np.random.default_rng(3)
    paths = [f"/recommend/u{u}?k=10" for u in rng.permutation(args.users)[:5000]]
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        urls = {}
        for label, (root, env) in arms.items():
            work = Path(tmp) / f"arm{len(urls)}"
            work.mkdir()
            redis_url, _ = stack.enter_context(redis_server(work, server_cpus))
            urls[label], _ = stack.enter_context(
                relrec_server(root, redis_url, args.capacity_workers, server_cpus, env))
        affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, client_cpus)
        try:
            for url in urls.values():
                run_async(closed_loop(url, paths, args.concurrency, args.warmup))
            rounds = argparse.Namespace(rounds=args.capacity_rounds,
                                        workers=args.capacity_workers,
                                        concurrency=args.concurrency,
                                        closed_seconds=args.capacity_seconds)
            return closed_rounds(rounds, urls, paths, args.capacity_seconds / 2)
        finally:
            os.sched_setaffinity(0, affinity)


def use_mapped_ids(vdir: Path, mapped: bool) -> None:
    """Give the version its mapped id maps (written from its JSON lists) or take them away
    (the loader then builds dicts, as for a version exported before issue 21), checksums
    included, so that one catalogue is served both ways side by side."""
    manifest = art.read_manifest(vdir)
    files, sizes = dict(manifest.files), dict(manifest.sizes)
    for name, json_name in ((art.USER_IDMAP, art.USER_IDS), (art.ITEM_IDMAP, art.ITEM_IDS)):
        files.pop(name, None)
        sizes.pop(name, None)
        (vdir / name).unlink(missing_ok=True)
        if mapped:
            write_ids(vdir / name, json.loads((vdir / json_name).read_text(encoding="utf-8")))
            files[name] = art.file_sha256(vdir / name)
            sizes[name] = (vdir / name).stat().st_size
    art.write_manifest(vdir, manifest.model_copy(update={"files": files, "sizes": sizes}))


def mb(n: float) -> str:
    return f"{n / 2**20:.0f}"


def report(n_items: int, root: Path, info: dict, recall: dict, runs: list[dict],
           id_maps: str) -> None:
    manifest = art.read_manifest(art.resolve_current(root))
    index = manifest.index
    files = ", ".join(f"{k} {mb(v)}" for k, v in sorted(info["sizes"].items()) if v > 2**20)
    print(f"\n{n_items} items: index {index.factory} ({index.params.get('chosen')}), export "
          f"{info['export_s']} s (plant {info['plant_s']} s), artifact "
          f"{mb(info['artifact_bytes'])} MB ({files})")
    print(f"  recall@10 {recall['recall_at_10']} on {recall['users']} users at C="
          f"{recall['c']}; id maps: {id_maps}")
    for run in runs:
        mem = list(run["memory"].values())
        print(f"  {run['workers']} worker(s): ready {run['ready_s']} s, {run['req_per_s']} "
              f"req/s; per worker: own heap {'/'.join(mb(m['anonymous']) for m in mem)} MB, "
              f"artifact pages {'/'.join(mb(m['artifact_rss']) for m in mem)} MB resident; "
              f"all workers hold {mb(held(mem))} MB")
    if runs:
        one, two = (held(list(r["memory"].values())) for r in runs[:2])
        print(f"  two workers hold {two / one:.2f}x the memory of one")


def size_label(result: dict) -> str:
    return f"{result['items']:,} items, {result['index']}"


def capacity_arms(results: list[dict], milvus: Path | None) -> dict[str, tuple[Path, dict]]:
    """Each catalogue served by its local index, and by Milvus too when it was published."""
    arms: dict[str, tuple[Path, dict]] = {}
    for r in results:
        arms[size_label(r)] = (r["root"], {})
        if milvus is not None:
            arms[f"{size_label(r)}, Milvus Lite"] = (
                r["root"], {"RELREC_RETRIEVER": "milvus", "RELREC_MILVUS_URI": str(milvus)})
    return arms


def report_capacity(results: list[dict], cap: dict[str, dict], workers: int) -> None:
    """Print each arm's capacity, as a ratio to the first's too; keep it in `results`."""
    first = next(iter(cap.values()))
    print(f"\ncapacity, {workers} worker(s) + Redis on one core, closed loop, arms alternated:")
    for label, row in cap.items():
        print(f"  {label:>30s}: {row['rps']:7.1f} req/s (rounds "
              f"{', '.join(f'{x:.0f}' for x in row['rps_rounds'])}), p50 {row['p50_ms']:.1f} "
              f"ms, p99 {row['p99_ms']:.1f} ms, errors {row['errors']}, server CPU "
              f"{row['server_cpu_ms']:.2f} ms a request, /healthz {row['healthz_rps']:.0f} "
              f"req/s (ratio {row['ratio']:.3f}); {row['rps'] / first['rps']:.2f}x the first")
    for r in results:
        mine = (size_label(r), f"{size_label(r)}, Milvus Lite")
        r["capacity"] = {k: v for k, v in cap.items() if k in mine}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", default="100000,1000000")
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--index", default="auto",
                   help=f"one of {', '.join(INDEX_KINDS)}, or one per --items size, comma-"
                   f"separated (the same size twice compares two indexes)")
    p.add_argument("--index-memory-mb", type=float, default=None)
    p.add_argument("--ef-construction", type=int, default=64)
    p.add_argument("--choose", action="store_true", help="the export's measured C choice")
    p.add_argument("--recall-users", type=int, default=20, help="0: skip the recall check")
    p.add_argument("--requests", type=int, default=200,
                   help="requests before the memory is read (0: no memory runs)")
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--json", type=Path, help="write the results here too")
    p.add_argument("--id-maps", default="exported", choices=["exported", "both"],
                   help="both: serve with dict id maps, then with mapped ones (issue 21)")
    p.add_argument("--milvus", type=Path, help="a Milvus Lite file: publish each catalogue "
                   "there and compare its top 10 with the local index's (the milvus extra)")
    p.add_argument("--milvus-users", type=int, default=300)
    p.add_argument("--capacity-seconds", type=float, default=0.0,
                   help="closed-loop rounds of this length, catalogues side by side (0: skip)")
    p.add_argument("--capacity-rounds", type=int, default=3)
    p.add_argument("--capacity-workers", type=int, default=2, help="uvicorn workers a server")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--warmup", type=float, default=5.0)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = []
    sizes = [int(x) for x in args.items.split(",")]
    kinds = args.index.split(",")
    kinds = kinds * len(sizes) if len(kinds) == 1 else kinds
    if len(kinds) != len(sizes) or not set(kinds) <= set(INDEX_KINDS):
        p.error(f"--index: one of {', '.join(INDEX_KINDS)}, or one per --items size")
    for n, kind in zip(sizes, kinds, strict=True):
        spec = replace(CatalogueSpec(n_items=n, n_users=args.users),
                       ef_construction=args.ef_construction)
        root = build(spec, kind, args.index_memory_mb, args.choose, args.cache)
        info = json.loads((root / INFO).read_text())
        modes = {"exported": [None], "both": [False, True]}[args.id_maps]
        served = {}
        for mapped in modes:  # before this process maps the version
            if mapped is not None:
                use_mapped_ids(art.resolve_current(root), mapped)
            label = {None: "as exported", False: "dicts", True: "mapped"}[mapped]
            if args.requests:
                served[label] = [serve(root, w, args.requests) for w in (1, 2)]
        if args.recall_users and info.get("recall", {}).get("users") != args.recall_users:
            info["recall"] = served_recall(root, args.recall_users)  # measured once
            (root / INFO).write_text(json.dumps(info, indent=2) + "\n")
        recall = info.get("recall", {"recall_at_10": "not measured", "users": 0, "c": "-"})
        for mode, runs in (served or {"not served (--requests 0)": []}).items():
            report(n, root, info, recall, runs, mode)
        milvus = None
        if args.milvus:
            milvus = milvus_side_by_side(root, str(args.milvus), args.milvus_users)
            print(f"  Milvus Lite (FLAT): published in {milvus['publish_s']} s; the same top 10 "
                  f"as the local index for {milvus['same_top10']:.2%} of {milvus['users']} "
                  f"users")
        results.append({"items": n, "index": kind, "root": root, "export": info, "recall": recall,
                        "serve": served, "milvus": milvus})
    if args.capacity_seconds > 0:
        cap = capacity(capacity_arms(results, args.milvus), args)
        report_capacity(results, cap, args.capacity_workers)
    for r in results:
        r["root"] = str(r["root"])
    print(f"\nload average {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
