"""Per-user candidate pools: how often they answer, and what retrieval costs with them (issue 18).

    python bench/pools.py ARTIFACT_DIR [--ks 32,64,128,256] [--new 0,1,5,20] [--batch 8]

For each pool size K, the pools are built in memory as the export builds them
(`training.pool_builder.pool_tables`), then every trained user is served as the recommender
serves them after `new` new interactions of two kinds:

- random: items drawn uniformly from the catalogue (the probe moves most: a pessimistic case);
- recommended: the user takes the first `new` of their own current candidates (what a
  recommender's users mostly do), which then count as seen.

Reported per (K, kind, new): the share of requests the pools answered (their bound held), the
share of those whose candidates are exact search's (a Flat index), up to ties at the C-th
place (`same_neighbours`; 1.0 by construction, the check of the bound), and the CPU per
request of `Retriever.candidates` with the pools against the artifact's own index alone, in
micro-batches of `--batch`, alternated over `--rounds` rounds (median; this process's CPU
clock, FAISS on one thread).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import artifact as art  # noqa: E402
from models.artifact_arrays import user_history  # noqa: E402
from service.loader import LoadedArtifact, load_artifact  # noqa: E402
from service.recommender import first_occurrences  # noqa: E402
from service.retriever import Retriever  # noqa: E402
from service.user_pools import UserPools  # noqa: E402
from training.pool_builder import pool_tables  # noqa: E402

Requests = tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[int]]


def requests(loaded: LoadedArtifact, exact: Retriever, kind: str, new: int,
             seed: int = 0) -> Requests:
    """Every trained user after `new` interactions of `kind`: vectors, histories (newest
    first, at most L_max), sorted seen rows, user rows (as service/recommender.py builds
    them)."""
    a, rng = loaded.arrays, np.random.default_rng(seed)
    rows = list(range(len(a.users)))
    vecs = np.asarray(a.users, np.float32)
    trained = [user_history(a, u) for u in rows]
    if kind == "random":
        posted = [rng.choice(loaded.n_items, new, replace=False) for _ in rows]
    else:
        now = exact.candidates(vecs, [t[: loaded.l_max] for t in trained],
                               [np.unique(t) for t in trained], max(new, 1))
        posted = [c[:new] for c in now]
    hists, seen = [], []
    for p, t in zip(posted, trained, strict=True):
        both = np.concatenate([np.asarray(p, np.int64), t])
        hists.append(first_occurrences(both)[: loaded.l_max])
        seen.append(np.unique(both))
    return vecs, hists, seen, rows


def same_neighbours(items: np.ndarray, probe: np.ndarray, got: np.ndarray | None,
                    want: np.ndarray) -> bool:
    """Whether two candidate lists are the same neighbours up to ties: their distances to the
    probe (float64), sorted, agree to 1e-6. Exact search in FAISS ranks by ‖q‖² − 2p·q + ‖p‖²
    in float32, so of two items 1e-7 apart at the C-th place it may keep either."""
    if got is None or len(got) != len(want):
        return False
    p = np.asarray(probe, np.float64)
    d = [np.sort(np.linalg.norm(np.asarray(items[r], np.float64) - p, axis=1)) for r in (got, want)]
    return bool(np.allclose(d[0], d[1], rtol=1e-6, atol=1e-7))


def cpu_ms(retriever: Retriever, req: Requests, batch: int, pools: bool) -> float:
    vecs, hists, seen, rows = req
    start = time.process_time()
    for s in range(0, len(rows), batch):
        sl = slice(s, s + batch)
        retriever.candidates(vecs[sl], hists[sl], seen[sl],
                             user_rows=rows[sl] if pools else None)
    return 1000 * (time.process_time() - start) / len(rows)


def geometry(loaded: LoadedArtifact) -> str:
    """Where the probes sit against the items: why no graph or list index serves them cheaply
    (a probe's nearest items stand out little from the rest)."""
    a = loaded.arrays
    items = np.ascontiguousarray(a.items, dtype=np.float32)
    retriever = Retriever(None, items, a.keys, a.memories, 0)
    probes = retriever.queries(np.asarray(a.users, np.float32),
                               [user_history(a, u)[: loaded.l_max] for u in range(len(a.users))])
    flat = faiss.IndexFlatL2(items.shape[1])
    flat.add(items)
    d2, rows = flat.search(np.ascontiguousarray(probes[:, 0]), 20)
    norm_p = np.linalg.norm(probes[:, 0], axis=1)
    cos = np.einsum("bd,bd->b", probes[:, 0], items[rows[:, 0]]) / (
        norm_p * np.linalg.norm(items[rows[:, 0]], axis=1))
    other = np.random.default_rng(0).integers(0, len(items), len(probes))  # one a user
    far = np.linalg.norm(items[other] - probes[:, 0], axis=1)
    med = np.median
    return (f"geometry (medians over {len(probes)} users): item norm "
            f"{med(np.linalg.norm(items, axis=1)):.3f}, probe norm {med(norm_p):.3f}, nearest "
            f"item at {med(np.sqrt(d2[:, 0])):.3f} (cosine {med(cos):.3f}), 20th at "
            f"{med(np.sqrt(d2[:, 19])):.3f}, a random item at {med(far):.3f}")


def measure(loaded: LoadedArtifact, k: int, kinds: list[str], news: list[int], batch: int,
            rounds: int) -> list[dict[str, Any]]:
    a = loaded.arrays
    c = loaded.n_candidates
    started = time.perf_counter()
    pools = UserPools(*pool_tables(a, k, loaded.l_max), "relation")
    build_s = time.perf_counter() - started
    flat = faiss.IndexFlatL2(a.items.shape[1])
    flat.add(np.ascontiguousarray(a.items, dtype=np.float32))
    exact = Retriever(flat, a.items, a.keys, a.memories, c)
    pooled = Retriever(loaded.index, a.items, a.keys, a.memories, c, pools=pools)
    out = []
    for kind in kinds:
        for new in news:
            if kind == "recommended" and new == 0:
                continue
            req = requests(loaded, exact, kind, new)
            vecs, hists, seen, rows = req
            probes = exact.queries(vecs, hists)[:, 0]
            answered = pools.candidates(a.items, rows, probes, seen, c)
            want = exact.candidates(vecs, hists, seen)
            hits = [i for i, x in enumerate(answered) if x is not None]
            same = [same_neighbours(a.items, probes[i], answered[i], want[i]) for i in hits]
            times: dict[str, list[float]] = {"pools": [], "index": []}
            for _ in range(rounds):
                times["pools"].append(cpu_ms(pooled, req, batch, True))
                times["index"].append(cpu_ms(pooled, req, batch, False))
            with_pools = statistics.median(times["pools"])
            alone = statistics.median(times["index"])
            out.append({"k": k, "kind": kind, "new": new, "users": len(rows),
                        "served": len(hits) / len(rows),
                        "exact": float(np.mean(same)) if same else None,
                        "ms_pools": with_pools, "ms_index": alone, "ratio": with_pools / alone,
                        "build_s": build_s})
            print(f"K {k} {kind} +{new}: served {out[-1]['served']:.3f}, equal to exact "
                  f"{out[-1]['exact']}, {with_pools:.3f} vs {alone:.3f} ms", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--ks", default="32,64,128,256")
    p.add_argument("--new", default="0,1,5,20")
    p.add_argument("--kinds", default="random,recommended")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    faiss.omp_set_num_threads(1)
    loaded = load_artifact(art.resolve_version_dir(args.artifact), ort_threads=1,
                           faiss_threads=1)
    print(f"artifact {loaded.version}: {loaded.n_items} items, {len(loaded.arrays.users)} "
          f"users, C {loaded.n_candidates}, index {loaded.manifest.index.factory}; "
          f"{platform.processor() or platform.machine()}")
    print(geometry(loaded))
    rows = []
    for k in [int(x) for x in args.ks.split(",")]:
        rows += measure(loaded, k, args.kinds.split(","), [int(x) for x in args.new.split(",")],
                        args.batch, args.rounds)
    print("\n| K | new interactions | served from pools | equal to exact search | "
          "retrieval CPU ms/request: pools | index alone | ratio |\n|---|---|---:|---:|---:|"
          "---:|---:|")
    for r in rows:
        print(f"| {r['k']} | {r['new']} {r['kind']} | {r['served']:.3f} | "
              f"{'–' if r['exact'] is None else format(r['exact'], '.3f')} | "
              f"{r['ms_pools']:.3f} | {r['ms_index']:.3f} | {r['ratio']:.2f}× |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
