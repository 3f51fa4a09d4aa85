"""Sampler: negatives and capped histories for training batches (pure functions, explicit rng).

Reads a user's training items as CSR arrays (`indptr`, `indices`, sorted within each row) and
writes int64 arrays the model consumes. Everything is vectorised over the batch: one epoch on
ML-1M draws ~460k negatives and ~23M history slots, and a per-row Python loop here would
dominate the epoch time (issue "Models and trainer": the epoch must be tensor arithmetic).
"""

from __future__ import annotations

import numpy as np

_MAX_REJECTION_ROUNDS = 100


class NegativeSampler:
    """Uniform negatives rejected against each user's training items (DESIGN §1).

    Precomputes the sorted pair keys once so that each batch costs one searchsorted.
    """

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, n_items: int) -> None:
        self.n_items = n_items
        row_of = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
        self._keys = row_of * n_items + indices.astype(np.int64)  # sorted: CSR order
        degree = np.diff(indptr)
        if len(degree) and degree.max() >= n_items:
            full = int(np.argmax(degree))
            raise ValueError(f"user row {full} interacted with every item: no negative exists")

    def is_positive(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        """True where (user, item) is a training pair: one searchsorted over the sorted keys."""
        query = user_rows * self.n_items + item_rows
        if len(self._keys) == 0:
            return np.zeros(len(query), dtype=bool)
        pos = np.minimum(np.searchsorted(self._keys, query), len(self._keys) - 1)
        return self._keys[pos] == query

    def sample(self, rng: np.random.Generator, user_rows: np.ndarray, n: int = 1) -> np.ndarray:
        """Negative item rows: `[B]` int64 for n = 1 (the reference's one negative), else
        `[B, n]`, each drawn independently (with replacement across the n) and rejected
        against the user's training items. n = 1 draws exactly the stream it always drew."""
        users = user_rows.astype(np.int64)
        if n > 1:
            users = np.repeat(users, n)
        negs = rng.integers(0, self.n_items, size=len(users), dtype=np.int64)
        bad = self.is_positive(users, negs)
        for _ in range(_MAX_REJECTION_ROUNDS):
            if not bad.any():
                return negs if n == 1 else negs.reshape(-1, n)
            idx = np.flatnonzero(bad)
            negs[idx] = rng.integers(0, self.n_items, size=len(idx), dtype=np.int64)
            bad[idx] = self.is_positive(users[idx], negs[idx])
        raise RuntimeError("negative sampling did not converge: users with almost every item")


def sample_history(
    rng: np.random.Generator,
    user_rows: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    l_max: int,
    exclude_rows: np.ndarray | None = None,
    item_weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's history capped at `l_max`: (rows [B, L] int64, mask [B, L] bool).

    Items are drawn without replacement by the exponential-keys method (Efraimidis and
    Spirakis 2006): key = Exp(1) / w, keep the `l_max` smallest; w = 1 is uniform and
    w = 1/popularity is the inverse-popularity option of DESIGN §1. `exclude_rows[b]` (the
    positive in training) is never drawn for row b. Pad slots hold row 0 under mask False.
    """
    user_rows = np.asarray(user_rows, dtype=np.int64)
    b = len(user_rows)
    starts = indptr[user_rows]
    degree = indptr[user_rows + 1] - starts  # [B]
    total = int(degree.sum())
    seg_start = np.cumsum(degree) - degree  # [B] offset of each segment in the flat arrays
    seg = np.repeat(np.arange(b), degree)  # [T]
    offset = np.arange(total) - np.repeat(seg_start, degree)  # [T] position inside segment
    items = indices[np.repeat(starts, degree) + offset].astype(np.int64)  # [T]

    # keys in [0, 0.5): 1 - exp(-E/w) is monotone in E/w; excluded items get 0.75, past any
    # real key. Adding the segment id turns the per-segment sort into one float argsort
    # (4x faster than lexsort on two keys).
    if item_weights is None:
        keys = 0.5 * rng.random(total)
    else:
        keys = -0.5 * np.expm1(-rng.standard_exponential(total) / item_weights[items])
    if exclude_rows is not None:
        keys[items == np.asarray(exclude_rows)[seg]] = 0.75
    order = np.argsort(seg + keys)  # segment-major, then smallest key first
    keep = (offset < l_max) & (keys[order] < 0.5)  # offset doubles as rank after sort
    rows = np.zeros((b, l_max), dtype=np.int64)
    mask = np.zeros((b, l_max), dtype=bool)
    rows[seg[keep], offset[keep]] = items[order][keep]
    mask[seg[keep], offset[keep]] = True
    return rows, mask


def inverse_popularity_weights(popularity: np.ndarray) -> np.ndarray:
    """w_j = 1 / max(pop_j, 1): favours rare items in capped histories (DESIGN §1 option)."""
    return 1.0 / np.maximum(popularity.astype(np.float64), 1.0)
