"""Recall@10 of the two-stage recommender (FAISS probes + exact re-rank) against exhaustive
exact scoring of every item by `scorer.onnx`, per candidate count C, on an exported artifact.

    python bench/retrieval.py ARTIFACT_DIR [--users 500] [--candidates 50,100,200,300,500]
    python bench/retrieval.py ARTIFACT_DIR --quick        # 100 users, C in {100, 300}
    python bench/retrieval.py --items 10000,100000,1000000 --users 200,100,20 \
        --cache runs/catalogues                            # synthetic catalogues (issue 7)

Users are sampled from the artifact's known users; each one's history is what the service
feeds the model (training history, newest first, capped at L_max) and their training items
are excluded, exactly as `GET /recommend` does. Also reports the retrieval and re-rank time
per user, and (with --probes all) the recall of the other probe sets for comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import artifact as art  # noqa: E402
from models.artifact_arrays import user_history  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catalogue import CatalogueSpec, build_catalogue  # noqa: E402

from service.loader import LoadedArtifact, load_artifact  # noqa: E402
from service.ranker import Ranker  # noqa: E402
from service.retriever import Retriever  # noqa: E402

K = 10


def user_inputs(
    a: LoadedArtifact, users: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    vecs = np.asarray(a.arrays.users[users], np.float32)  # [B, d]
    rows = np.zeros((len(users), a.l_max), np.int64)  # [B, L]
    mask = np.zeros((len(users), a.l_max), np.float32)  # [B, L]
    hists, seen = [], []
    for b, u in enumerate(users):
        h = user_history(a.arrays, int(u))
        rows[b, : min(len(h), a.l_max)] = h[: a.l_max]
        mask[b, : min(len(h), a.l_max)] = 1.0
        hists.append(h[: a.l_max])
        seen.append(np.unique(h))
    return vecs, rows, mask, hists, seen


def exact_distances(
    a: LoadedArtifact,
    vecs: np.ndarray,
    rows: np.ndarray,
    mask: np.ndarray,
    seen: list[np.ndarray],
    chunk: int = 1024,
) -> np.ndarray:
    """Distances `[B, V]` of every item by the exact scorer, seen items at +inf."""
    n = a.n_items
    dist = np.empty((len(vecs), n), np.float32)  # [B, V]
    for s in range(0, n, chunk):
        cand = np.tile(np.arange(s, min(n, s + chunk), dtype=np.int64), (len(vecs), 1))
        (d,) = a.session.run(
            ["distances"],
            {"user_vecs": vecs, "hist_rows": rows, "hist_mask": mask, "cand_rows": cand},
        )
        dist[:, s : s + cand.shape[1]] = d
    for b, s_ in enumerate(seen):
        dist[b, s_] = np.inf
    return dist


def tie_aware_recall(found: np.ndarray, dist: np.ndarray, k: int = K) -> float:
    """Share of the k found items whose exact distance is within the exact k-th best (ties
    at the boundary count as hits, as faiss `contrib` evaluation does)."""
    kth = np.partition(dist, k - 1)[k - 1]
    return float(np.sum(dist[found] <= kth + 1e-6 * max(1.0, abs(kth)))) / k


def recall_at_k(
    retriever: Retriever,
    ranker: Ranker,
    inputs: tuple,
    exact: np.ndarray,
    n_candidates: int,
    batch: int = 64,
) -> tuple[float, float, float]:
    vecs, rows, mask, hists, seen = inputs
    hits, t_ret, t_rank = [], 0.0, 0.0
    for s in range(0, len(vecs), batch):
        sl = slice(s, s + batch)
        t0 = time.perf_counter()
        cands = retriever.candidates(vecs[sl], hists[sl], seen[sl], n_candidates)
        t1 = time.perf_counter()
        ranked = ranker.rank(vecs[sl], rows[sl], mask[sl], cands, [K] * len(cands))
        t2 = time.perf_counter()
        t_ret, t_rank = t_ret + t1 - t0, t_rank + t2 - t1
        for b, r in enumerate(ranked):
            hits.append(tie_aware_recall(r.rows, exact[s + b]))
    n = len(vecs)
    return float(np.mean(hits)), 1000 * t_ret / n, 1000 * t_rank / n


def hnsw_index(items: np.ndarray, ef_search: int) -> faiss.Index:
    index = faiss.IndexHNSWFlat(items.shape[1], 32)
    index.hnsw.efConstruction = 200
    index.add(np.ascontiguousarray(items, dtype=np.float32))
    index.hnsw.efSearch = ef_search
    return index


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifact", type=Path, nargs="?", help="version dir or artifacts root")
    p.add_argument(
        "--items",
        default="",
        help="instead of an artifact: synthetic catalogues of these sizes "
        "(bench/catalogue.py), e.g. 10000,100000,1000000",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=Path("runs/catalogues"),
        help="where synthetic catalogues are cached",
    )
    p.add_argument(
        "--users",
        default="500",
        help="users sampled per artifact; a list gives one per catalogue size",
    )
    p.add_argument("--candidates", default="25,50,100,200,300,500")
    p.add_argument(
        "--probes",
        choices=["service", "all"],
        default="service",
        help="all: also report simpler probe sets",
    )
    p.add_argument(
        "--hnsw",
        default="",
        help="also rebuild the index as HNSW32 and test these efSearch values, "
        "e.g. 16,64,256 (what the exporter does above 50k items)",
    )
    p.add_argument("--quick", action="store_true", help="100 users, C in {100, 300}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    if args.quick:
        args.users, args.candidates = "100", "100,300"
    if (args.artifact is None) == (not args.items):
        p.error("give an artifact directory or --items, not both")
    return args


def main() -> None:
    args = parse_args()
    users = [int(x) for x in args.users.split(",")]
    if args.artifact is not None:
        runs = [(args.artifact, users[0])]
    else:
        sizes = [int(x) for x in args.items.split(",")]
        users += [users[-1]] * (len(sizes) - len(users))
        small = {"n_users": 500, "dim": 16, "n_memory": 4, "l_max": 8, "max_history": 12}
        runs = [
            (
                build_catalogue(
                    CatalogueSpec(n_items=n, **(small if args.quick else {})), args.cache
                ),
                u,
            )
            for n, u in zip(sizes, users, strict=False)
        ]
    out = [evaluate(path, n, args) for path, n in runs]
    if args.json:
        args.json.write_text(json.dumps(out if len(out) > 1 else out[0], indent=2))


def evaluate(path: Path, n_sample: int, args: argparse.Namespace) -> dict[str, object]:
    """Recall@10 per probe set and C on one artifact; prints a line per (probes, C)."""
    a = load_artifact(art.resolve_version_dir(path), ort_threads=0)
    rng = np.random.default_rng(args.seed)
    n_users = len(a.arrays.user_ids)
    users = np.sort(rng.choice(n_users, min(n_sample, n_users), replace=False))
    inputs = user_inputs(a, users)
    t0 = time.perf_counter()
    exact = exact_distances(a, *inputs[:3], inputs[4])
    t_exact = 1000 * (time.perf_counter() - t0) / len(users)
    ranker = Ranker(a.session, a.l_max, a.has_attention)
    mem = a.arrays.memories
    names = {
        "relation": "p_u + w·M, w from history (service)",
        "centroid": "p_u + mean(M)",
        "slots": "p_u + m_i per slot, round robin",
        "user": "p_u",
    }
    kinds = list(names) if args.probes == "all" else ["relation"]
    variants = {
        names[k]: Retriever(a.index, a.arrays.items, a.arrays.keys, mem, 0, probes=k) for k in kinds
    }
    print(
        f"artifact {a.version}: {a.manifest.kind}, {n_users} users, {a.n_items} items, "
        f"d={a.dim}, N={len(mem)}, L_max={a.l_max}, index {type(a.index).__name__}; "
        f"{len(users)} users; exact scoring of all items {t_exact:.2f} ms/user"
    )
    results = []
    for name, retriever in variants.items():
        for c in (int(x) for x in args.candidates.split(",")):
            r, t_ret, t_rank = recall_at_k(retriever, ranker, inputs, exact, c)
            results.append(
                {
                    "probes": name,
                    "C": c,
                    "recall_at_10": r,
                    "retrieval_ms_per_user": t_ret,
                    "rerank_ms_per_user": t_rank,
                }
            )
            print(
                f"{name:42s} C={c:5d}  recall@10={r:.4f}  retrieval {t_ret:.2f} ms/user  "
                f"re-rank {t_rank:.2f} ms/user"
            )
    for ef in (int(x) for x in args.hnsw.split(",") if x):
        index = hnsw_index(a.arrays.items, ef)
        retriever = Retriever(index, a.arrays.items, a.arrays.keys, mem, 0)
        for c in (int(x) for x in args.candidates.split(",")):
            r, t_ret, t_rank = recall_at_k(retriever, ranker, inputs, exact, c)
            results.append(
                {
                    "probes": "relation",
                    "index": f"HNSW32 efSearch={ef}",
                    "C": c,
                    "recall_at_10": r,
                    "retrieval_ms_per_user": t_ret,
                    "rerank_ms_per_user": t_rank,
                }
            )
            print(
                f"{'HNSW32 efSearch=' + str(ef):42s} C={c:5d}  recall@10={r:.4f}  "
                f"retrieval {t_ret:.2f} ms/user  re-rank {t_rank:.2f} ms/user"
            )
    return {
        "artifact": a.version,
        "items": a.n_items,
        "index": type(a.index).__name__,
        "users": len(users),
        "exact_ms_per_user": t_exact,
        "results": results,
    }


if __name__ == "__main__":
    main()
