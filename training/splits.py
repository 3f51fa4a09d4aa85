"""Splits: the third stage of the offline path, from filtered `Interactions` to a `Split`.

Reads the binarised, k-cored log of `training/filters.py` and writes train / validation / test
`Interactions` that share the full data's id maps, so a row means the same user or item in all
three. Three protocols (DESIGN §2): `per-user` (the HLR paper, after Sun et al. RecSys 2020),
`global` (the HLR reference code) and `leave-one-out` (LRML, NCF style). Each is a seeded,
vectorised assignment of every row to a stage (lexsort by user then a random or time key), so
ML-1M splits in well under a second.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from training.interactions import DataError, Interactions

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

__all__ = ["SPLIT_KINDS", "Split", "global_", "leave_one_out", "make_split", "per_user"]

SPLIT_KINDS: tuple[str, ...] = ("per-user", "global", "leave-one-out")
_TRAIN, _VALID, _TEST = 0, 1, 2


@dataclass(frozen=True)
class Split:
    """Train, validation and test logs over the same id maps, and how they were made."""

    train: Interactions
    valid: Interactions
    test: Interactions
    kind: str
    seed: int

    def __post_init__(self) -> None:
        for part in (self.valid, self.test):
            if part.users is not self.train.users or part.items is not self.train.items:
                raise DataError("train, valid and test must share the same user and item maps")

    @property
    def n_users(self) -> int:
        return self.train.n_users

    @property
    def n_items(self) -> int:
        return self.train.n_items

    def train_csr(self) -> csr_matrix:  # [n_users, n_items]
        """Each user's train items (row u's indices), the negatives' rejection set."""
        return self.train.to_csr()

    def seen_csr(self, stage: str = "test") -> csr_matrix:  # [n_users, n_items]
        """Items to exclude when ranking for `stage`: train for "valid", train + valid for
        "test" (DESIGN §2, full-ranking protocol)."""
        if stage == "valid":
            return self.train.to_csr()
        if stage == "test":
            seen = self.train.to_csr() + self.valid.to_csr()
            seen.data[:] = 1.0
            return seen
        raise DataError(f"unknown stage {stage!r}; expected 'valid' or 'test'")

    def sizes(self) -> dict[str, int]:
        """Rows per part, for logs and the manifest."""
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


def per_user(inter: Interactions, seed: int = 0,
             fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Split:
    """Shuffle each user's interactions (seeded) and cut them train/valid/test.

    Rounding rule, for a user with c interactions: n_test = round-half-up(c * f_test), then
    n_valid = round-half-up(c * f_valid), each capped so that at least one interaction stays
    in train (test is served first); train gets the rest. So c = 10 gives 8/1/1, c = 5 gives
    3/1/1, c = 4 gives 4/0/0, c = 1 gives 1/0/0.
    """
    _check_fractions(fractions)
    _check_not_empty(inter)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(inter)), inter.user_rows))
    count, pos = _count_and_position(inter.user_rows, order, inter.n_users)
    n_test = np.minimum(_round_half_up(count * fractions[2]), count - 1)
    n_valid = np.minimum(_round_half_up(count * fractions[1]), count - 1 - n_test)
    sorted_users = inter.user_rows[order]
    c, t, v = count[sorted_users], n_test[sorted_users], n_valid[sorted_users]
    stage_sorted = np.where(pos >= c - t, _TEST, np.where(pos >= c - t - v, _VALID, _TRAIN))
    return _assemble(inter, order, stage_sorted, "per-user", seed)


def global_(inter: Interactions, seed: int = 2021, test_size: float = 0.2,
            valid_size: float = 0.1) -> Split:
    """Random split over all interactions: `test_size` test, then `valid_size` of the rest valid.

    Mirrors the HLR reference code, which calls sklearn's `train_test_split` twice with the same
    `random_state` (ShuffleSplit: ceil(size * n) rows from `RandomState(seed).permutation(n)`);
    on the same row order this gives the same rows. Users or items of valid/test may be absent
    from train here: evaluators should skip what they cannot score.
    """
    _check_not_empty(inter)
    n = len(inter)
    n_test = int(np.ceil(test_size * n))
    perm = np.random.RandomState(seed).permutation(n)
    test_rows, rest = perm[:n_test], perm[n_test:]
    n_valid = int(np.ceil(valid_size * len(rest)))
    perm_rest = rest[np.random.RandomState(seed).permutation(len(rest))]
    stage = np.full(n, _TRAIN, np.int8)
    stage[test_rows] = _TEST
    stage[perm_rest[:n_valid]] = _VALID
    return _assemble(inter, np.arange(n), stage, "global", seed)


def leave_one_out(inter: Interactions, seed: int = 0) -> Split:
    """Each user's latest interaction is test and the second latest validation.

    Latest by timestamp, ties broken at random (seeded); without timestamps the held-out items
    are drawn at random. Users with fewer than 3 interactions keep all of them in train.
    """
    _check_not_empty(inter)
    rng = np.random.default_rng(seed)
    keys = [rng.random(len(inter))]
    if inter.timestamps is not None:
        keys.append(inter.timestamps)
    order = np.lexsort((*keys, inter.user_rows))
    count, pos = _count_and_position(inter.user_rows, order, inter.n_users)
    c = count[inter.user_rows[order]]
    stage_sorted = np.where(c < 3, _TRAIN,
                            np.where(pos == c - 1, _TEST, np.where(pos == c - 2, _VALID, _TRAIN)))
    return _assemble(inter, order, stage_sorted, "leave-one-out", seed)


_SPLITTERS: dict[str, Callable[[Interactions, int], Split]] = {
    "per-user": lambda inter, seed: per_user(inter, seed),
    "global": lambda inter, seed: global_(inter, seed),
    "leave-one-out": lambda inter, seed: leave_one_out(inter, seed),
}


def make_split(inter: Interactions, kind: str, seed: int) -> Split:
    """Dispatch on the split kind: "per-user" | "global" | "leave-one-out"."""
    key = kind.strip().lower().replace("_", "-")
    if key not in _SPLITTERS:
        raise DataError(f"unknown split kind {kind!r}; expected one of {', '.join(SPLIT_KINDS)}")
    return _SPLITTERS[key](inter, seed)


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise DataError(f"fractions must be three non-negative numbers (train, valid, test) "
                        f"summing to 1, got {fractions}")


def _check_not_empty(inter: Interactions) -> None:
    if len(inter) == 0:
        raise DataError("cannot split an empty log; check the filters (--min-rating, --k-core)")


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5).astype(np.int64)


def _count_and_position(user_rows: np.ndarray, order: np.ndarray,
                        n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows per user [U], and each sorted row's position within its user's group [n]."""
    count = np.bincount(user_rows, minlength=n_users)
    start = np.cumsum(count) - count
    pos = np.arange(len(order)) - start[user_rows[order]]
    return count, pos


def _assemble(inter: Interactions, order: np.ndarray, stage_sorted: np.ndarray, kind: str,
              seed: int) -> Split:
    """Scatter the per-sorted-row stages back to log order and cut the three parts."""
    stage = np.empty(len(inter), np.int8)
    stage[order] = stage_sorted
    return Split(inter.select(stage == _TRAIN), inter.select(stage == _VALID),
                 inter.select(stage == _TEST), kind, seed)
