"""Top-K ranking metrics: the scoring stage of evaluation, pure numpy.

Reads ranked recommendation rows (`top_items` [B, K], best first) and each row's relevant set;
writes one value per user, so that the evaluator can report a mean *with* its spread
(spotlight's `evaluation.py` returns per-user arrays for the same reason). Relevance is
computed once into `hits` [B, K] bool plus `n_relevant` [B] (|test| per user) by
:func:`hits_at_k`; every metric is then a few vectorised array operations over `hits`.

Conventions: gains are binary; position i counts from 1 (best); the negative item row -1
marks an empty slot (fewer than K rankable items) and is never a hit. Formulas follow RecBole's
`recbole/evaluator/metrics.py` and are given in each docstring.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

__all__ = [
    "hit_rate_at_k",
    "hits_at_k",
    "map_at_k",
    "median_popularity",
    "mrr_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
]

Relevant = sparse.spmatrix | sparse.sparray | np.ndarray | Sequence[Sequence[int] | np.ndarray]


def hits_at_k(top_items: np.ndarray, relevant: Relevant) -> tuple[np.ndarray, np.ndarray]:
    """Mark which recommended items are relevant: `(hits [B, K] bool, n_relevant [B] int64)`.

    `relevant` is row-aligned with `top_items` and is either a sparse matrix [B, n_items]
    (non-zeros are relevant), a dense bool matrix [B, n_items], or one array of item rows per
    user. Membership is a binary search of the keys `row * n_items + item` in the sorted CSR
    keys, so the cost is O(B K log nnz) without densifying anything.
    """
    top_items = np.asarray(top_items, dtype=np.int64)  # [B, K]
    csr = _to_csr(relevant, min_cols=int(top_items.max(initial=-1)) + 1)
    if csr.shape[0] != len(top_items):
        raise ValueError(f"relevant has {csr.shape[0]} rows, top_items has {len(top_items)}")
    n_cols = csr.shape[1]
    row_of_nnz = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
    keys = row_of_nnz * n_cols + csr.indices  # sorted: rows ascend, indices sorted per row
    valid = (top_items >= 0) & (top_items < n_cols)
    queries = np.arange(len(top_items), dtype=np.int64)[:, None] * n_cols + top_items  # [B, K]
    pos = np.minimum(np.searchsorted(keys, queries), max(len(keys) - 1, 0))
    hits = valid & (keys[pos] == queries) if len(keys) else np.zeros(top_items.shape, bool)
    return hits, np.diff(csr.indptr).astype(np.int64)


def _to_csr(relevant: Relevant, min_cols: int) -> sparse.csr_matrix:
    """Binary CSR with sorted, duplicate-free indices (the layout `hits_at_k` searches)."""
    if sparse.issparse(relevant):
        csr = sparse.csr_matrix(relevant, copy=True)
    elif isinstance(relevant, np.ndarray) and relevant.ndim == 2:
        csr = sparse.csr_matrix(relevant.astype(bool))
    else:
        rows = [np.unique(np.asarray(r, dtype=np.int64)) for r in relevant]
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        cols = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        n_cols = max(min_cols, int(cols.max(initial=-1)) + 1)
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        return sparse.csr_matrix((np.ones(len(cols), bool), cols, indptr),
                                 shape=(len(rows), n_cols))
    csr.eliminate_zeros()
    csr.sum_duplicates()  # also sorts the indices
    return csr


def _check(hits: np.ndarray, n_relevant: np.ndarray | None, k: int | None) -> np.ndarray:
    """The first k columns of `hits`; recall-type metrics are undefined for an empty test set."""
    if hits.ndim != 2:
        raise ValueError(f"hits must be [B, K], got shape {hits.shape}")
    if n_relevant is not None:
        if len(n_relevant) != len(hits):
            raise ValueError("hits and n_relevant must have the same number of rows")
        if np.any(np.asarray(n_relevant) < 1):
            raise ValueError("every user needs >= 1 relevant item; drop users with none first")
    return hits[:, :k].astype(bool) if k is not None else hits.astype(bool)


def _discounts(k: int) -> np.ndarray:
    """1 / log2(i + 1) for positions i = 1..k."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def precision_at_k(hits: np.ndarray, k: int | None = None) -> np.ndarray:
    """P@K = |top-K ∩ test| / K, per user [B].

    K is the list length (the number of columns), not the number of filled slots, so a short
    list is penalised as it would be in a product.
    """
    hits = _check(hits, None, k)
    return hits.sum(axis=1) / hits.shape[1]


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int | None = None) -> np.ndarray:
    """R@K = |top-K ∩ test| / |test|, per user [B] (DESIGN §2: hits over |test|, not min)."""
    hits = _check(hits, n_relevant, k)
    return hits.sum(axis=1) / np.asarray(n_relevant, dtype=np.float64)


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int | None = None) -> np.ndarray:
    """NDCG@K = DCG@K / IDCG@K, per user [B], with binary gains.

    DCG@K = Σ_{i=1..K} hit_i / log2(i + 1); IDCG@K = Σ_{i=1..min(|test|, K)} 1 / log2(i + 1),
    the DCG of a list that puts every test item first (Järvelin & Kekäläinen 2002; RecBole NDCG).
    """
    hits = _check(hits, n_relevant, k)
    disc = _discounts(hits.shape[1])  # [K]
    dcg = hits @ disc
    idcg = np.cumsum(disc)[np.minimum(n_relevant, hits.shape[1]) - 1]
    return dcg / idcg


def map_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int | None = None) -> np.ndarray:
    """AP@K per user [B]; its mean over users is MAP@K.

    AP@K = (1 / min(|test|, K)) Σ_{i=1..K} P@i · hit_i, with P@i = (Σ_{j<=i} hit_j) / i. The
    min() keeps a perfect list at 1 when |test| > K (RecBole MAP).
    """
    hits = _check(hits, n_relevant, k)
    k_ = hits.shape[1]
    prec_at_i = np.cumsum(hits, axis=1) / np.arange(1, k_ + 1)  # [B, K]
    return (prec_at_i * hits).sum(axis=1) / np.minimum(n_relevant, k_)


def mrr_at_k(hits: np.ndarray, k: int | None = None) -> np.ndarray:
    """RR@K = 1 / rank of the first hit, 0 when no hit is in the top K, per user [B]."""
    hits = _check(hits, None, k)
    first = hits.argmax(axis=1)  # 0 when there is no hit: masked below
    return np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0)


def hit_rate_at_k(hits: np.ndarray, k: int | None = None) -> np.ndarray:
    """HR@K = 1 if any test item is in the top K else 0, per user [B] (NCF's HR)."""
    return _check(hits, None, k).any(axis=1).astype(np.float64)


def median_popularity(top_items: np.ndarray, popularity: np.ndarray) -> float:
    """Median train popularity of the *distinct* recommended items (one scalar, not per user).

    Counting each item once measures how far into the long tail the catalogue that a model
    recommends reaches; weighting by how often it is recommended would mostly measure the head.
    Empty slots (-1) are ignored; NaN when nothing was recommended.
    """
    items = np.unique(np.asarray(top_items, dtype=np.int64))
    items = items[items >= 0]
    if len(items) == 0:
        return float("nan")
    return float(np.median(np.asarray(popularity)[items]))
