"""Candidate count C and efSearch (nprobe, k_factor) chosen per artifact at export (issue 18).

Stage: a step of the export, after `scorer.onnx` and the FAISS index are written. Reads the
exported tables, histories, scorer and index; returns the `RetrievalInfo` the manifest records
and the service reads. Recall is measured exactly as the service computes a recommendation
(`service.retriever.Retriever` with its default probes, the user's history newest first capped
at L_max, seen items excluded), against exhaustive exact scoring of every item by the same
scorer: recall@k is the share of the two-stage top k whose exact distance is within the exact
k-th best (tie-aware, as faiss `contrib` evaluates). The re-rank of C candidates by the scorer
equals the exact distances restricted to them, so one exhaustive pass serves every (C, ef).

The rule: the smallest C on `C_GRID` that reaches the target at the largest efSearch, then the
smallest efSearch reaching it at that C; on an IVF-PQ index (issue 21) nprobe takes
efSearch's place, over powers of two up to nlist, and on a refined fast scan (pqfs) k_factor, the
candidates re-ordered exactly per result. C first, because the exact re-rank of a candidate
costs more than an HNSW step (docs/benchmarks.md "Serving": re-rank 26.6% of a request's CPU
at C = 200, the whole FAISS search 13.2% at efSearch 256). Where no C reaches the target (an
HNSW graph that misses items at every efSearch, as on the grown catalogues of
docs/benchmarks.md "Serving at the floor"), the smallest C and efSearch reaching the best
recall measured are kept, and the log says that the index limits recall.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import onnxruntime as ort

from models import artifact as art
from models.artifact_arrays import ArtifactArrays, read_arrays, user_history
from models.scorer_io import DISTANCES, scorer_feed
from service.retriever import ProbeKind, Retriever, refined_index

__all__ = ["C_GRID", "EF_GRID", "TARGET_RECALL", "UserSample", "choose_for_version",
           "choose_retrieval",
           "exact_distances", "recall_at", "sample_users", "tie_aware_recall"]

log = logging.getLogger(__name__)

TARGET_RECALL = 0.995
K = 10
C_GRID: tuple[int, ...] = (10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 300, 500, 750, 1000,
                           1500, 2000)
EF_GRID: tuple[int, ...] = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536,
                           2048)
NPROBE_GRID: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
K_FACTOR_GRID: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
N_USERS = 500
# Exhaustive scoring costs users x items scorer evaluations (HLR, d 100, L 50, N 20: ~35 µs
# each on the shared 2-core dev machine, 500 users x 20k items in 349 s): past this many the
# user sample shrinks, to no fewer than MIN_USERS.
PAIR_BUDGET = 10_000_000
MIN_USERS = 50


@dataclass(frozen=True)
class UserSample:
    """What the service feeds the model for each sampled user (recommender._user_state)."""

    vecs: np.ndarray  # [B, d] float32
    hist_rows: np.ndarray  # [B, L] int64, pads 0
    hist_mask: np.ndarray  # [B, L] float32
    hists: list[np.ndarray]  # B arrays: history newest first, at most L_max
    seen: list[np.ndarray]  # B arrays: every known item, excluded from the answer
    rows: list[int] = field(default_factory=list)  # the users' rows (their candidate pools)

    def __len__(self) -> int:
        return len(self.vecs)


def sample_users(arrays: ArtifactArrays, l_max: int, n: int, seed: int = 0) -> UserSample:
    """`n` known users drawn without replacement (seeded), as the service would serve them."""
    n_users = len(arrays.users)
    rows = np.sort(np.random.default_rng(seed).choice(n_users, min(n, n_users), replace=False))
    hist_rows = np.zeros((len(rows), l_max), np.int64)  # [B, L]
    hist_mask = np.zeros((len(rows), l_max), np.float32)  # [B, L]
    hists, seen = [], []
    for b, u in enumerate(rows.tolist()):
        h = user_history(arrays, u)
        hists.append(h[:l_max])
        hist_rows[b, : len(hists[-1])] = hists[-1]
        hist_mask[b, : len(hists[-1])] = 1.0
        seen.append(np.unique(h))
    vecs = np.ascontiguousarray(arrays.users[rows], dtype=np.float32)
    return UserSample(vecs, hist_rows, hist_mask, hists, seen, rows.tolist())


def exact_distances(session: ort.InferenceSession, users: UserSample, n_items: int,
                    user_chunk: int = 32, item_chunk: int = 512) -> np.ndarray:
    """Distances `[B, V]` of every item by the scorer, seen items at +inf.

    Chunked so that HLR's `[B, C, L, N]` attention stays near 64 MB."""
    dist = np.empty((len(users), n_items), np.float32)  # [B, V]
    for u0 in range(0, len(users), user_chunk):
        us = slice(u0, u0 + user_chunk)
        b = len(users.vecs[us])
        for i0 in range(0, n_items, item_chunk):
            cand = np.arange(i0, min(n_items, i0 + item_chunk), dtype=np.int64)
            feed = scorer_feed(users.vecs[us], users.hist_rows[us], users.hist_mask[us],
                               np.tile(cand, (b, 1)))
            (d,) = session.run([DISTANCES], feed)
            dist[us, i0 : i0 + len(cand)] = d
    for b, s in enumerate(users.seen):
        dist[b, s] = np.inf
    return dist


def tie_aware_recall(found: np.ndarray, dist: np.ndarray, k: int = K) -> float:
    """Share of the best k of `found` (by exact distance) within the exact k-th best of all
    items; ties at the boundary count as hits. k shrinks to the unseen items there are."""
    k = min(k, int(np.isfinite(dist).sum()))
    if k == 0:
        return 1.0
    kth = np.partition(dist, k - 1)[k - 1]
    top = found[np.argsort(dist[found], kind="stable")[:k]] if len(found) else found
    return float(np.sum(dist[top] <= kth + 1e-6 * max(1.0, abs(float(kth))))) / k


def recall_at(retriever: Retriever, users: UserSample, exact: np.ndarray, c: int,
              k: int = K, batch: int = 64) -> float:
    """Mean recall@k over the users of the service's two-stage result with C = c."""
    hits = []
    for s in range(0, len(users), batch):
        sl = slice(s, s + batch)
        cands = retriever.candidates(users.vecs[sl], users.hists[sl], users.seen[sl], c,
                                     user_rows=users.rows[sl] or None)
        hits += [tie_aware_recall(f, exact[s + b], k) for b, f in enumerate(cands)]
    return float(np.mean(hits)) if hits else 1.0


def set_ef_search(index: Any, ef: int) -> None:
    """efSearch of an HNSW index (as service/loader.py sets it)."""
    faiss.ParameterSpace().set_index_parameter(index, "efSearch", ef)


def is_hnsw(index: Any) -> bool:
    return hasattr(faiss.downcast_index(index), "hnsw")


def ivf_lists(index: Any) -> int | None:
    """nlist of an IVF index (IVF-PQ, issue 21); None for any other."""
    try:
        return int(faiss.extract_index_ivf(index).nlist)
    except RuntimeError:
        return None


def set_nprobe(index: Any, nprobe: int) -> None:
    faiss.extract_index_ivf(index).nprobe = nprobe


def is_refined(index: Any) -> bool:
    """A fast scan whose candidates are re-ordered by exact distance (pqfs, issue 18)."""
    return refined_index(index) is not None


def set_k_factor(index: Any, k_factor: int) -> None:
    refined_index(index).k_factor = float(k_factor)


def describe_knob(index: Any, ef_search: int | None = None) -> str:
    """What the service searches `index` with, for a report line: "efSearch=24" (HNSW, as
    set: `ef_search` where the caller tracks it), "k_factor=32", "nprobe=16" or "exact
    index"."""
    if is_hnsw(index):
        ef = faiss.downcast_index(index).hnsw.efSearch if ef_search is None else ef_search
        return f"efSearch={ef}"
    if is_refined(index):
        return f"k_factor={refined_index(index).k_factor:g}"
    if ivf_lists(index) is not None:
        return f"nprobe={faiss.extract_index_ivf(index).nprobe}"
    return "exact index"


SETTERS: dict[str, Callable[[Any, int], None]] = {
    "ef_search": set_ef_search, "nprobe": set_nprobe, "k_factor": set_k_factor}


def search_knob(index: Any) -> tuple[str | None, list[int | None]]:
    """What trades search time for recall on `index`, and the grid to measure: efSearch
    (HNSW), nprobe (IVF: powers of two up to nlist), k_factor (pqfs), nothing (Flat)."""
    if is_hnsw(index):
        return "ef_search", list(EF_GRID)
    if is_refined(index):
        return "k_factor", list(K_FACTOR_GRID)
    nlist = ivf_lists(index)
    if nlist is not None:
        return "nprobe", [p for p in NPROBE_GRID if p < nlist] + [nlist]
    return None, [None]


def choose_retrieval(session: ort.InferenceSession, index: Any, arrays: ArtifactArrays,
                     l_max: int, *, target: float = TARGET_RECALL, k: int = K,
                     n_users: int = N_USERS, probes: ProbeKind = "relation",
                     seed: int = 0, c_grid: tuple[int, ...] = C_GRID) -> art.RetrievalInfo:
    """Measure recall@k over C (and efSearch on HNSW) and pick the cheapest that reaches
    `target`; logs what was chosen and why. Leaves `index` at the chosen efSearch. C runs
    over `c_grid` up to the catalogue (C = V re-ranks every unseen item: recall 1 on an exact
    index); the rule is `pick`'s."""
    n_items = len(arrays.items)
    n = max(min(n_users, MIN_USERS), min(n_users, PAIR_BUDGET // max(n_items, 1)))
    users = sample_users(arrays, l_max, n, seed)
    exact = exact_distances(session, users, n_items)
    retriever = Retriever(index, arrays.items, arrays.keys, arrays.memories, 0, probes=probes)
    cs = sorted({min(c, n_items) for c in c_grid})
    knob, efs = search_knob(index)
    setter = SETTERS[knob or "ef_search"]
    curve: list[art.RecallPoint] = []

    def measure(c: int, value: int | None) -> float:
        if value is not None:
            setter(index, value)
        r = recall_at(retriever, users, exact, c, k)
        curve.append(art.RecallPoint.model_validate({"c": c, "recall": r, knob or "": value}
                                                    if knob else {"c": c, "recall": r}))
        return r

    best_c, best_value, recall = pick(measure, cs, efs, target)
    if best_value is not None:
        setter(index, best_value)
    info = art.RetrievalInfo(n_candidates=best_c, probes=probes, k=k,
                             ef_search=best_value if knob == "ef_search" else None,
                             nprobe=best_value if knob == "nprobe" else None,
                             k_factor=best_value if knob == "k_factor" else None,
                             target_recall=target, recall=recall, met=recall >= target,
                             users=len(users), curve=curve)
    log_choice(info)
    return info


def pick(measure: Callable[[int, int | None], float], cs: list[int], efs: list[int | None],
         target: float) -> tuple[int, int | None, float]:
    """(C, efSearch, recall) by the rule of the module docstring; `measure(c, ef)` is recall.

    C ascending at the largest efSearch until one reaches `target`; if none does, the
    smallest C reaching the best recall seen (the index, not C, caps it: more candidates
    would cost re-rank time and buy nothing). Then efSearch ascending at that C, to the
    smallest reaching what the largest efSearch reached (capped at `target`)."""
    seen: dict[int, float] = {}
    best_c = None
    for c in cs:
        seen[c] = measure(c, efs[-1])
        if seen[c] >= target:
            best_c = c
            break
    if best_c is None:
        best_c = next(c for c in cs if seen[c] == max(seen.values()))
    goal = min(target, seen[best_c])
    for ef in efs[:-1]:
        r = measure(best_c, ef)
        if r >= goal:
            return best_c, ef, r
    return best_c, efs[-1], seen[best_c]


def choose_for_version(vdir: Path, index: Any, l_max: int, **kwargs: Any) -> art.RetrievalInfo:
    """`choose_retrieval` on a version directory being written: the arrays and scorer as the
    service will load them, and the index built for it (kept in memory)."""
    session = ort.InferenceSession(str(vdir / art.SCORER), providers=["CPUExecutionProvider"])
    return choose_retrieval(session, index, read_arrays(vdir), l_max, **kwargs)


def log_choice(info: art.RetrievalInfo) -> None:
    """The export log line: what was chosen, and the measurements that rule out less."""
    ef = (f"nprobe={info.nprobe}" if info.nprobe is not None
          else f"k_factor={info.k_factor}" if info.k_factor is not None
          else "exact index" if info.ef_search is None else f"efSearch={info.ef_search}")
    if not info.met:
        largest = max(p.c for p in info.curve)
        log.warning("retrieval: no C up to %d reached recall@%d %.3f on %d users; recall "
                    "plateaus at %.4f from C=%d, %s: the index limits it (a Flat or a refined "
                    "fast-scan index, --index flat or pqfs, would do better)",
                    largest, info.k, info.target_recall, info.users, info.recall,
                    info.n_candidates, ef)
        return
    why = []
    fewer = [p for p in info.curve if p.c < info.n_candidates]  # measured at the largest ef
    if fewer:
        why.append(f"C={fewer[-1].c} gave {fewer[-1].recall:.4f}")
    knob = next((name for name in ("ef_search", "nprobe", "k_factor")
                 if getattr(info, name) is not None), None)
    chosen = getattr(info, knob) if knob else None
    lower = [p for p in info.curve if knob and p.c == info.n_candidates
             and (v := getattr(p, knob)) is not None and v < chosen]
    if knob and lower:
        below = max(lower, key=lambda p: getattr(p, knob))
        name = {"ef_search": "efSearch"}.get(knob, knob)
        why.append(f"{name}={getattr(below, knob)} gave {below.recall:.4f}")
    log.info("retrieval: C=%d, %s: the smallest reaching recall@%d %.4f >= %.3f against "
             "exhaustive exact scoring on %d users (probes %s); %s", info.n_candidates, ef,
             info.k, info.recall, info.target_recall, info.users, info.probes,
             "; ".join(why) or "the smallest measured")
