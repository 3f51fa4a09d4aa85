"""Interactions: the first stage of the offline path.

Readers produce an :class:`Interactions` (dense int rows plus the :class:`IdMap` that maps them
back to external string ids); the filters here (positive threshold, binarisation, iterative
k-core) turn a raw log into the implicit-feedback matrix that splits, samplers and models read.
Everything is numpy: no torch, so the data path can be tested and reused without a model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.idmap import IdMap


class DataError(ValueError):
    """The input data cannot be used as given; the message says what to change."""


__all__ = ["DataError", "IdMap", "Interactions", "densify"]


@dataclass(frozen=True)
class Interactions:
    """A log of (user_row, item_row, weight, timestamp) over fixed user and item id maps.

    `weights` holds the rating or play count until :func:`binarize` sets it to 1;
    `timestamps` is None when the source has none. The id maps may contain users or items
    with no row here (splits share the maps of the full data).
    """

    user_rows: np.ndarray  # [n] int64
    item_rows: np.ndarray  # [n] int64
    weights: np.ndarray  # [n] float32
    timestamps: np.ndarray | None  # [n] int64 or None
    users: IdMap
    items: IdMap

    def __post_init__(self) -> None:
        n = len(self.user_rows)
        if len(self.item_rows) != n or len(self.weights) != n:
            raise DataError("user_rows, item_rows and weights must have the same length")
        if self.timestamps is not None and len(self.timestamps) != n:
            raise DataError("timestamps must have the same length as user_rows")

    @classmethod
    def from_ids(
        cls,
        user_ids: Sequence[object],
        item_ids: Sequence[object],
        weights: Sequence[float] | np.ndarray | None = None,
        timestamps: Sequence[int] | np.ndarray | None = None,
    ) -> Interactions:
        """Build from external ids, assigning rows in order of first appearance."""
        u_codes, u_uniques = _factorize(user_ids)
        i_codes, i_uniques = _factorize(item_ids)
        n = len(u_codes)
        w = np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32)
        ts = None if timestamps is None else np.asarray(timestamps, np.int64)
        return cls(u_codes, i_codes, w, ts, IdMap(u_uniques), IdMap(i_uniques))

    def __len__(self) -> int:
        return len(self.user_rows)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def select(self, mask_or_index: np.ndarray) -> Interactions:
        """Rows of the log picked by a boolean mask or an index array; id maps unchanged."""
        ts = None if self.timestamps is None else self.timestamps[mask_or_index]
        return Interactions(self.user_rows[mask_or_index], self.item_rows[mask_or_index],
                            self.weights[mask_or_index], ts, self.users, self.items)

    def to_csr(self):  # -> scipy.sparse.csr_matrix [n_users, n_items]
        """Binary user x item matrix (duplicates collapse to 1)."""
        from scipy.sparse import csr_matrix

        data = np.ones(len(self), np.float32)
        m = csr_matrix((data, (self.user_rows, self.item_rows)),
                       shape=(self.n_users, self.n_items))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    def item_popularity(self) -> np.ndarray:
        """Number of interactions per item row, [n_items] int64."""
        return np.bincount(self.item_rows, minlength=self.n_items).astype(np.int64)

    def fingerprint(self) -> str:
        """Stable sha256 of the content (ids, rows, weights, timestamps): goes into manifests."""
        h = hashlib.sha256()
        for arr in (self.user_rows, self.item_rows, self.weights):
            h.update(np.ascontiguousarray(arr).tobytes())
        if self.timestamps is not None:
            h.update(np.ascontiguousarray(self.timestamps).tobytes())
        h.update("\x1f".join(self.users.to_list()).encode())
        h.update("\x1e".join(self.items.to_list()).encode())
        return h.hexdigest()


def _factorize(values: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes in order of first appearance, and the unique values as strings."""
    import pandas as pd

    codes, uniques = pd.factorize(pd.Series(values, dtype=object).astype(str), sort=False)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


def densify(inter: Interactions) -> Interactions:
    """Drop users and items that have no interaction left and renumber rows densely."""
    u_keep = np.unique(inter.user_rows)
    i_keep = np.unique(inter.item_rows)
    u_new = np.full(inter.n_users, -1, np.int64)
    u_new[u_keep] = np.arange(len(u_keep))
    i_new = np.full(inter.n_items, -1, np.int64)
    i_new[i_keep] = np.arange(len(i_keep))
    return Interactions(u_new[inter.user_rows], i_new[inter.item_rows], inter.weights,
                        inter.timestamps, inter.users.subset(u_keep), inter.items.subset(i_keep))
