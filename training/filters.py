"""Filters: the second stage of the offline path, from a raw log to implicit feedback.

Reads the raw `Interactions` of `training/readers.py` (ratings or play counts in `weights`) and
writes the implicit-feedback log that splits and models expect: `binarize()` keeps positives
(rating >= threshold) as weight 1, one row per (user, item); `k_core()` drops users and items
with fewer than k interactions until none is left to drop (DESIGN §2). Both return re-densified
id maps, so no user or item without interactions survives. Vectorised numpy, no pandas.
"""

from __future__ import annotations

import numpy as np

from training.interactions import DataError, Interactions, densify

__all__ = ["binarize", "k_core"]


def binarize(inter: Interactions, min_rating: float | None = 4.0) -> Interactions:
    """Keep rows with weight >= `min_rating` (all rows when None) and set weights to 1.

    Duplicate (user, item) pairs collapse to one row, the one with the latest timestamp (the
    last in log order when there are no timestamps or on ties), so that a re-rated item is one
    positive and k-core counts distinct items. Rows keep their log order; ids are re-densified.
    """
    keep = np.ones(len(inter), bool) if min_rating is None else inter.weights >= min_rating
    rows = _latest_per_pair(inter, np.flatnonzero(keep))
    if len(rows) == 0:
        top = float(inter.weights.max()) if len(inter) else float("nan")
        raise DataError(
            f"binarize with min_rating={min_rating} left no interactions (the largest "
            f"rating/weight in the log is {top:g}); lower --min-rating, or pass --no-threshold "
            f"(min_rating=None) for a log without ratings"
        )
    picked = inter.select(rows)
    ones = np.ones(len(rows), np.float32)
    return densify(Interactions(picked.user_rows, picked.item_rows, ones, picked.timestamps,
                                picked.users, picked.items))


def _latest_per_pair(inter: Interactions, rows: np.ndarray) -> np.ndarray:
    """Of `rows`, one per (user, item): the latest timestamp, then the last in log order."""
    if len(rows) == 0:
        return rows
    pair = inter.user_rows[rows] * np.int64(inter.n_items) + inter.item_rows[rows]
    ts = inter.timestamps[rows] if inter.timestamps is not None else np.zeros(len(rows), np.int64)
    order = np.lexsort((rows, ts, pair))  # by pair, then time, then position
    last = np.ones(len(order), bool)
    last[:-1] = pair[order][1:] != pair[order][:-1]
    return np.sort(rows[order[last]])


def k_core(inter: Interactions, k: int = 10) -> Interactions:
    """Iterative k-core: drop users and items with < k interactions until a fixed point.

    Dropping a user can push an item under k and the reverse, so counts are recomputed until
    nothing changes; every user and item left has >= k rows. Counts are rows: binarize first so
    that they are distinct items. `k <= 1` keeps every row (ids are still re-densified).
    """
    kept = np.arange(len(inter))
    if k > 1:
        kept = _k_core_rows(inter.user_rows, inter.item_rows, inter.n_users, inter.n_items, k)
    if len(kept) == 0:
        hint = f"; try --k-core {max(k // 2, 1)}" if k > 1 else ""
        raise DataError(f"k-core with k={k} left no interactions{hint}")
    return densify(inter.select(kept))


def _k_core_rows(user_rows: np.ndarray, item_rows: np.ndarray, n_users: int, n_items: int,
                 k: int) -> np.ndarray:
    """Indices of the rows in the k-core; each pass is two bincounts over the surviving rows."""
    kept = np.arange(len(user_rows))
    while len(kept):
        users, items = user_rows[kept], item_rows[kept]
        user_count = np.bincount(users, minlength=n_users)
        item_count = np.bincount(items, minlength=n_items)
        ok = (user_count[users] >= k) & (item_count[items] >= k)
        if ok.all():
            break
        kept = kept[ok]
    return kept
