"""The FAISS index of a version: which kind fits the memory budget, and building it (issue 21).

Stage: a step of the export (`training/exporter.py`, `training/baseline_export.py`), after the
tables are written. The index only proposes candidates; the exact ONNX re-rank orders them,
so a compressed index costs recall at a given C, not accuracy of the scores, and
`training/candidates.py` then picks C (and efSearch or nprobe) reaching the recall target
against exhaustive exact scoring.

Kinds and their memory (n items, d dims; what a worker maps, shared by every worker):

    flat    exact search                            4·d·n bytes
    hnsw    HNSW32 over the float vectors            (4·d + ~2.1·4·M + 16)·n
    ivfpq   IVF (nlist lists) + PQ m bytes/vector    (m + 8)·n + centroids and codebooks
    ivfpqfs IVF + 4-bit PQ scanned with SIMD         (m/2 + 8)·n + centroids and codebooks
            ("fast scan": 8.6x less search CPU than ivfpq at 1M items, nprobe 16, one
            thread; but FAISS reads its codes into each worker's memory, mapping nothing,
            and 4-bit codes rank candidates more coarsely: docs/benchmarks.md, issue 21)
    pqfs    4-bit PQ of every item, SIMD-scanned,    (4·d + m/2)·n + codebooks
            its best k·k_factor re-ordered by exact distance ("PQ<m>x4fs,RFlat", m = d/2;
            issue 18). No graph and no lists, so probes that are not items are served as
            well as items: on the grown 100k catalogue, where HNSW plateaued at recall@10
            0.922, it served 0.997 at C = 20 and 2.09x the requests of exact search
            (docs/benchmarks.md, "Serving at the floor"); `training/candidates.py` picks
            k_factor as it picks nprobe.

`auto` without a budget keeps the earlier rule (flat up to FLAT_MAX_ITEMS, HNSW above); with
`memory_mb` it takes the first of flat (small catalogues), hnsw, ivfpq (the most bytes per
vector that fit) whose estimate fits; ivfpqfs is only built when asked for, because the
workers would each hold a copy of it. pqfs is asked for, or taken by the export when the
HNSW index `auto` built misses the recall target (`training/exporter.py`). IVF-PQ trains its
coarse quantiser and codebooks on a seeded sample (`TRAIN_PER_LIST` points a list), so that
its build cost grows with the sample, not the catalogue, and adds the rest in chunks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from models import artifact as art

__all__ = ["FLAT_MAX_ITEMS", "HNSW_EF_CONSTRUCTION", "HNSW_EF_SEARCH", "HNSW_M", "INDEX_KINDS",
           "REFINE_K_FACTOR", "IndexChoice", "IndexChoiceError", "build_index", "choose_index",
           "estimate_bytes", "recall_vs_exact"]

log = logging.getLogger(__name__)

INDEX_KINDS = ("auto", "flat", "hnsw", "ivfpq", "ivfpqfs", "pqfs")
# Exact search up to here; HNSW above. Exact search costs every item per query, HNSW about
# the same at any size: on a 20k-item HLR catalogue (d 100, one core) a Flat search took
# ~0.6 ms a query against ~0.1 ms for HNSW32 at the efSearch the export chose (24, recall@10
# 0.996 served), and served 0.70-0.90x the CPU per request (docs/benchmarks.md, "Flat or
# HNSW at 20k items, on a quiet machine"). 10k keeps the real data sets here exact (ML-1M
# 3.7k items, ml-latest-small 9.7k with its text-only movies); autofaiss's rule was 50k.
FLAT_MAX_ITEMS = 10_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 256  # saved in the index; the service sets manifest.retrieval's efSearch
IVF_NPROBE = 16  # set before the measured choice of training/candidates.py
TRAIN_PER_LIST = 64  # coarse-quantiser training points per IVF list (faiss wants >= 39)
PQ_TRAIN_MIN = 256 * 40  # points for 8-bit PQ codebooks
MIN_IVFPQ_ITEMS = 1000
# pqfs: candidates re-ordered exactly = k x this, saved in the index file (written before the
# export measures its own choice, which the manifest records and the service sets)
REFINE_K_FACTOR = 8
RECALL_C = 300  # the C of IndexInfo.recall_at_c (index vs exact search, not the served C)


class IndexChoiceError(ValueError):
    """No index kind satisfies the request (kind, budget); the message says what would."""


@dataclass(frozen=True)
class IndexChoice:
    """The kind to build and its parameters, with the estimate that chose it."""

    kind: str  # "flat", "hnsw", "ivfpq", "ivfpqfs" or "pqfs"
    estimate_bytes: int
    reason: str
    nlist: int = 0  # ivfpq
    m: int = 0  # ivfpq(fs), pqfs: PQ sub-quantisers (a byte each at nbits 8, half at 4)
    nbits: int = 8


def _nlist(n_items: int) -> int:
    """IVF lists: a power of two near √n, with at least 39 items a list."""
    target = 2 ** round(math.log2(max(1.0, math.sqrt(n_items))))
    return int(max(1, min(target, 65536, n_items // 39)))


def _pq_options(dim: int) -> list[int]:
    """PQ sub-quantiser counts m (divisors of d, at least 2 dims each), most bytes first."""
    return [m for m in range(dim // 2, 0, -1) if dim % m == 0]


def estimate_bytes(kind: str, n_items: int, dim: int, m: int = 0, nlist: int = 0) -> int:
    """What the index file (and so its mapping) takes, within a few percent."""
    if kind == "flat":
        return 4 * dim * n_items
    if kind == "hnsw":
        return int((4 * dim + 2.1 * 4 * HNSW_M + 16) * n_items)
    if kind == "pqfs":
        return 4 * dim * n_items + (m + 1) // 2 * n_items + 4 * dim * 16 + 1024
    if kind == "ivfpqfs":
        return (m + 1) // 2 * n_items + 8 * n_items + 4 * dim * nlist + 4 * dim * 16 + 1024
    return (m + 8) * n_items + 4 * dim * nlist + 4 * dim * 256 + 1024


def choose_index(kind: str, n_items: int, dim: int, memory_mb: float | None) -> IndexChoice:
    """The index to build for `kind` ("auto" or one of the kinds) under `memory_mb`."""
    if kind not in INDEX_KINDS:
        raise IndexChoiceError(f"index must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    budget = None if memory_mb is None else int(memory_mb * 2**20)
    nlist = _nlist(n_items)
    options = _pq_options(dim)
    fits = (lambda b: True) if budget is None else (lambda b: b <= budget)

    def ivfpq(reason: str, pq: str = "ivfpq") -> IndexChoice:
        if n_items < MIN_IVFPQ_ITEMS:
            raise IndexChoiceError(f"{pq} needs at least {MIN_IVFPQ_ITEMS} items to train on, "
                                   f"the catalogue has {n_items}; use flat")
        preferred = [m for m in options if m <= max(1, dim // 4)] or options
        pool = options if budget is not None else preferred
        nbits = 4 if pq == "ivfpqfs" else 8
        for m in pool:
            est = estimate_bytes(pq, n_items, dim, m, nlist)
            if fits(est):
                return IndexChoice(pq, est, reason, nlist=nlist, m=m, nbits=nbits)
        least = estimate_bytes(pq, n_items, dim, options[-1], nlist)
        raise IndexChoiceError(f"no index over {n_items} items of dim {dim} fits {memory_mb} "
                               f"MB: the smallest ({pq}, {options[-1]} sub-quantisers) needs "
                               f"{least / 2**20:.0f} MB; raise --index-memory-mb")

    if kind in ("ivfpq", "ivfpqfs"):
        return ivfpq("asked for", kind)
    if kind == "pqfs":
        if n_items < MIN_IVFPQ_ITEMS:
            raise IndexChoiceError(f"pqfs needs at least {MIN_IVFPQ_ITEMS} items to train on, "
                                   f"the catalogue has {n_items}; use flat")
        return _pqfs(n_items, dim, fits, "asked for")
    if kind in ("flat", "hnsw"):
        est = estimate_bytes(kind, n_items, dim)
        if not fits(est):
            raise IndexChoiceError(f"a {kind} index over {n_items} items needs "
                                   f"~{est / 2**20:.0f} MB, over --index-memory-mb {memory_mb}; "
                                   f"raise it or use --index auto")
        return IndexChoice(kind, est, "asked for")
    flat, hnsw = (estimate_bytes(k, n_items, dim) for k in ("flat", "hnsw"))
    if n_items <= FLAT_MAX_ITEMS and fits(flat):
        return IndexChoice("flat", flat, f"auto: {n_items} <= {FLAT_MAX_ITEMS} items")
    if fits(hnsw):
        why = "auto: no budget" if budget is None else f"auto: fits {memory_mb} MB"
        return IndexChoice("hnsw", hnsw, f"{why}, {n_items} > {FLAT_MAX_ITEMS} items"
                           if n_items > FLAT_MAX_ITEMS else why)
    return ivfpq(f"auto: hnsw needs ~{hnsw / 2**20:.0f} MB > {memory_mb} MB")


def _pqfs(n_items: int, dim: int, fits: Callable[[int], bool], reason: str) -> IndexChoice:
    """PQ fast scan with exact refinement: two dims a code (m = d/2, or the most codes of at
    least two dims that d allows), because refinement needs the 4-bit scan to keep the true
    neighbours within its k·k_factor (at d = 100, m = 25 kept under 0.92 of them at any
    k_factor up to 16; m = 50, 0.998)."""
    m = _pq_options(dim)[0]
    est = estimate_bytes("pqfs", n_items, dim, m)
    if not fits(est):
        raise IndexChoiceError(f"a pqfs index over {n_items} items needs ~{est / 2**20:.0f} MB "
                               f"(it keeps the float vectors); raise --index-memory-mb or use "
                               f"ivfpq")
    return IndexChoice("pqfs", est, reason, m=m, nbits=4)


def build_index(items: np.ndarray, queries: np.ndarray | None = None,
                kind: str = "auto", ef_construction: int = HNSW_EF_CONSTRUCTION,
                metric: str = "L2", memory_mb: float | None = None,
                seed: int = 0) -> tuple[faiss.Index, art.IndexInfo]:
    """FAISS index over item vectors, and what the manifest records of it.

    `metric` is "L2" (the relational models' distance) or "IP" (inner product: ALS, most
    popular). Recall@C of an approximate index is measured against exact search on `queries`.
    """
    items = np.ascontiguousarray(items, dtype=np.float32)
    n_items, dim = items.shape
    choice = choose_index(kind, n_items, dim, memory_mb)
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "IP" else faiss.METRIC_L2
    common = {"budget_mb": memory_mb, "estimate_bytes": choice.estimate_bytes,
              "chosen": choice.reason}
    c = min(RECALL_C, n_items)
    if choice.kind == "flat":
        index = faiss.IndexFlat(dim, faiss_metric)
        index.add(items)
        return index, art.IndexInfo(factory="Flat", metric=metric, recall_at_c=1.0, c=c,
                                    params=common)
    if choice.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss_metric)
        index.hnsw.efConstruction = ef_construction
        index.add(items)
        index.hnsw.efSearch = HNSW_EF_SEARCH
        factory = f"HNSW{HNSW_M}"
        params = {"M": HNSW_M, "efConstruction": ef_construction, "efSearch": HNSW_EF_SEARCH}
    elif choice.kind == "pqfs":
        index, params = _build_pqfs(items, choice, faiss_metric, seed)
        factory = f"PQ{choice.m}x4fs,RFlat"
    else:
        index, params = _build_ivfpq(items, choice, faiss_metric, seed)
        factory = (f"IVF{choice.nlist},PQ{choice.m}x{params['nbits']}"
                   f"{'fs' if choice.kind == 'ivfpqfs' else ''}")
    recall = (None if queries is None or len(queries) == 0
              else recall_vs_exact(index, items, queries, c, faiss_metric))
    log.info("index %s over %d items (%s; ~%.0f MB), recall@%d vs exact search %s", factory,
             n_items, choice.reason, choice.estimate_bytes / 2**20, c,
             "not measured" if recall is None else f"{recall:.3f}")
    return index, art.IndexInfo(factory=factory, metric=metric, params=params | common,
                                recall_at_c=recall, c=c)


def _build_ivfpq(items: np.ndarray, choice: IndexChoice, metric: int,
                 seed: int) -> tuple[faiss.Index, dict[str, int]]:
    """IVF-PQ (8-bit codes, or 4-bit fast scan) trained on a seeded sample, the catalogue
    added in chunks."""
    n_items, dim = items.shape
    sample_n = min(n_items, max(TRAIN_PER_LIST * choice.nlist, PQ_TRAIN_MIN))
    rows = np.sort(np.random.default_rng(seed).choice(n_items, sample_n, replace=False))
    sample = np.ascontiguousarray(items[rows])
    if choice.kind == "ivfpqfs":
        nbits, codes = 4, f"PQ{choice.m}x4fs"  # fast scan: 4 bits only
    else:
        nbits = 8 if sample_n >= PQ_TRAIN_MIN else max(4, int(math.log2(sample_n / 40)))
        codes = f"PQ{choice.m}x{nbits}"
    # faiss seeds its k-means itself (ClusteringParameters.seed): the same sample, the same index
    index = faiss.index_factory(dim, f"IVF{choice.nlist},{codes}", metric)
    index.train(sample)
    for start in range(0, n_items, 1 << 18):
        index.add(items[start:start + (1 << 18)])
    faiss.extract_index_ivf(index).nprobe = min(IVF_NPROBE, choice.nlist)
    return index, {"nlist": choice.nlist, "m": choice.m, "nbits": nbits,
                   "nprobe": min(IVF_NPROBE, choice.nlist), "train_sample": sample_n}


def _build_pqfs(items: np.ndarray, choice: IndexChoice, metric: int,
                seed: int) -> tuple[faiss.Index, dict[str, int]]:
    """"PQ<m>x4fs,RFlat": codebooks trained on a seeded sample, every item coded and kept."""
    n_items, dim = items.shape
    sample_n = min(n_items, max(PQ_TRAIN_MIN, 1 << 16))
    rows = np.sort(np.random.default_rng(seed).choice(n_items, sample_n, replace=False))
    index = faiss.index_factory(dim, f"PQ{choice.m}x4fs,RFlat", metric)
    index.train(np.ascontiguousarray(items[rows]))
    for start in range(0, n_items, 1 << 18):
        index.add(items[start:start + (1 << 18)])
    faiss.downcast_index(index).k_factor = REFINE_K_FACTOR
    return index, {"m": choice.m, "nbits": 4, "k_factor": REFINE_K_FACTOR,
                   "train_sample": sample_n}


def recall_vs_exact(index: faiss.Index, items: np.ndarray, queries: np.ndarray, c: int,
                    metric: int = faiss.METRIC_L2) -> float:
    """Recall@c of `index` against exact search over `items` on `queries`."""
    exact = faiss.IndexFlat(items.shape[1], metric)
    exact.add(items)
    _, truth = exact.search(queries, c)
    _, found = index.search(queries, c)
    hits = sum(len(np.intersect1d(t, f)) for t, f in zip(truth, found, strict=True))
    return float(hits / truth.size)
