"""Recall@10 against exhaustive exact scoring, per C and per efSearch, on an artifact (issue 18).

    python bench/recall.py ARTIFACT_DIR [--users 200] [--candidates 10,20,50,100,200,500]
        [--ef 16,32,64,128,256,512] [--hnsw] [--json out.json]

Measured exactly as the export measures it (training/candidates.py: the service's Retriever
and probes, histories newest first capped at L_max, seen items excluded; the exact re-rank of
C candidates is the exhaustive distances restricted to them, tie-aware recall), on users drawn
with another seed than the export's, so the recall at the chosen C is checked on users the
choice never saw. `--hnsw` rebuilds an HNSW32 index over a Flat artifact's items to show the
efSearch axis too (what the exporter builds above 50k items); `--flat` adds exact search over
an HNSW artifact's items. On a refined fast scan (pqfs) the axis is `--k-factors`. Prints a
markdown table and the manifest's choice with its recall on this sample.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import artifact as art  # noqa: E402
from service.loader import load_artifact  # noqa: E402
from service.retriever import Retriever, refined_index  # noqa: E402
from service.user_pools import PoolTally  # noqa: E402
from training import candidates  # noqa: E402


def hnsw_over(items: np.ndarray) -> faiss.Index:
    index = faiss.IndexHNSWFlat(items.shape[1], 32)
    index.hnsw.efConstruction = 200
    index.add(np.ascontiguousarray(items, dtype=np.float32))
    return index


def recall_at_chosen(artifact: Path, n_users: int = 200, n_candidates: int | None = None,
                     seed: int = 1) -> dict[str, Any]:
    """Recall@10 at the C and efSearch the service uses (the manifest's unless `n_candidates`
    overrides, as RELREC_N_CANDIDATES would), on users drawn with `seed`; what bench/serve.py
    reports beside its throughput."""
    loaded = load_artifact(art.resolve_version_dir(artifact), ort_threads=0,
                           n_candidates=n_candidates)
    a = loaded.arrays
    users = candidates.sample_users(a, loaded.l_max, n_users, seed)
    exact = candidates.exact_distances(loaded.session, users, loaded.n_items)
    retriever = Retriever(loaded.index, a.items, a.keys, a.memories, loaded.n_candidates,
                          pools=loaded.pools)  # as served: pools where their bound holds
    r = candidates.recall_at(retriever, users, exact, loaded.n_candidates)
    knob = candidates.describe_knob(loaded.index, loaded.ef_search)
    return {"C": loaded.n_candidates, "ef_search": loaded.ef_search, "knob": knob,
            "users": len(users), "recall_at_10": r}


def grid(loaded: Any, users: candidates.UserSample, exact: np.ndarray, index: Any,
         cs: list[int], values: list[int | None], knob: str = "ef_search"
         ) -> list[dict[str, Any]]:
    """Recall@10 per C and per value of the index's knob (efSearch, or k_factor of pqfs)."""
    a = loaded.arrays
    retriever = Retriever(index, a.items, a.keys, a.memories, 0)
    rows = []
    for value in values:
        if value is not None:
            candidates.SETTERS[knob](index, value)
        for c in cs:
            t0 = time.perf_counter()
            r = candidates.recall_at(retriever, users, exact, min(c, loaded.n_items))
            rows.append({"ef_search": value if knob == "ef_search" else None,
                         "k_factor": value if knob == "k_factor" else None, "C": c,
                         "recall_at_10": r, "seconds": time.perf_counter() - t0})
    return rows


def table(rows: list[dict[str, Any]], cs: list[int]) -> str:
    keys = list(dict.fromkeys((r["ef_search"], r.get("k_factor")) for r in rows))
    at = {(r["ef_search"], r.get("k_factor"), r["C"]): r["recall_at_10"] for r in rows}
    head = "| index | " + " | ".join(f"C = {c}" for c in cs) + " |"
    lines = [head, "|---|" + "---:|" * len(cs)]
    for ef, kf in keys:
        name = (f"HNSW32 efSearch {ef}" if ef is not None
                else f"refined fast scan (pqfs), k_factor {kf}" if kf is not None
                else "exact (Flat)")
        lines.append(f"| {name} | " + " | ".join(f"{at[(ef, kf, c)]:.4f}" for c in cs) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifact", type=Path, help="version dir or artifacts root")
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--candidates", default="10,20,50,100,200,500")
    p.add_argument("--ef", default="16,32,64,128,256,512", help="efSearch values (HNSW)")
    p.add_argument("--k-factors", default="1,4,16,32,64",
                   help="k_factor values (a refined fast scan, pqfs)")
    p.add_argument("--hnsw", action="store_true", help="also an HNSW32 index over the items")
    p.add_argument("--flat", action="store_true",
                   help="also an exact index over an HNSW artifact's items (what the probe "
                   "alone loses, without the graph's misses)")
    p.add_argument("--seed", type=int, default=1, help="user sample (the export used 0)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    vdir = art.resolve_version_dir(args.artifact)
    loaded = load_artifact(vdir, ort_threads=0)
    users = candidates.sample_users(loaded.arrays, loaded.l_max, args.users, args.seed)
    t0 = time.perf_counter()
    exact = candidates.exact_distances(loaded.session, users, loaded.n_items)
    t_exact = time.perf_counter() - t0
    cs = [int(x) for x in args.candidates.split(",")]
    efs = [int(x) for x in args.ef.split(",")]
    hnsw = candidates.is_hnsw(loaded.index)
    refined = candidates.is_refined(loaded.index)
    served_kf = refined_index(loaded.index).k_factor if refined else None
    if refined:
        kfs = [int(x) for x in args.k_factors.split(",")]
        rows = grid(loaded, users, exact, loaded.index, cs, kfs, "k_factor")
        candidates.set_k_factor(loaded.index, served_kf)  # the grid moved it
    else:
        rows = grid(loaded, users, exact, loaded.index, cs, efs if hnsw else [None])
    if args.hnsw and not hnsw:
        rows += grid(loaded, users, exact, hnsw_over(loaded.arrays.items), cs, efs)
    if args.flat and hnsw:
        flat = faiss.IndexFlatL2(loaded.dim)
        flat.add(np.ascontiguousarray(loaded.arrays.items, dtype=np.float32))
        rows = grid(loaded, users, exact, flat, cs, [None]) + rows
    chosen = loaded.manifest.retrieval
    if hnsw:
        candidates.set_ef_search(loaded.index, loaded.ef_search)  # the grid moved it
    a = loaded.arrays
    served = candidates.recall_at(  # the index alone: this Retriever has no pools
        Retriever(loaded.index, a.items, a.keys, a.memories, loaded.n_candidates), users,
        exact, loaded.n_candidates)
    pooled: dict[str, Any] | None = None
    if loaded.pools is not None:  # as served: each user's pool where its bound holds
        tally = PoolTally()
        retriever = Retriever(loaded.index, a.items, a.keys, a.memories, loaded.n_candidates,
                              pools=loaded.pools, on_pool=tally)
        pooled = {"recall_at_10": candidates.recall_at(retriever, users, exact,
                                                       loaded.n_candidates),
                  "served_from_pools": tally.served, "searched": tally.searched}
    print(f"artifact {loaded.version}: {loaded.manifest.kind}, {loaded.n_items} items, "
          f"{len(loaded.arrays.users)} users, index {loaded.manifest.index.factory}; "
          f"{len(users)} users (seed {args.seed}); exhaustive scoring {t_exact:.0f} s; "
          f"{platform.processor() or platform.machine()}")
    print(table(rows, cs))
    print(f"chosen at export: {chosen}" if chosen else "no choice recorded in the manifest")
    knob = candidates.describe_knob(loaded.index, loaded.ef_search)
    print(f"recall@10 at the served C={loaded.n_candidates}, {knob} on this sample: "
          f"{served:.4f} (the index alone)")
    if pooled is not None:
        print(f"  with the version's candidate pools (K={loaded.manifest.pools.k}), as served: "
              f"{pooled['recall_at_10']:.4f}; {pooled['served_from_pools']} users answered "
              f"from their pool, {pooled['searched']} through the index")
    if args.json:
        args.json.write_text(json.dumps({
            "artifact": loaded.version, "items": loaded.n_items, "users": len(users),
            "exact_s": t_exact, "grid": rows, "served": {
                "C": loaded.n_candidates, "ef_search": loaded.ef_search, "k_factor": served_kf,
                "recall_at_10": served, "with_pools": pooled},
            "chosen": None if chosen is None else chosen.model_dump(mode="json")}, indent=2))


if __name__ == "__main__":
    main()
