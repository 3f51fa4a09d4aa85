"""Splits: partition of the input, proportions, seeding, and leave-one-out's time order."""

from __future__ import annotations

import numpy as np
import pytest

from training.filters import binarize
from training.interactions import DataError, Interactions
from training.splits import SPLIT_KINDS, Split, global_, leave_one_out, make_split, per_user
from training.synthetic import planted_interactions


@pytest.fixture(scope="module")
def inter() -> Interactions:
    return binarize(planted_interactions(n_users=120, n_items=80, items_per_user=20, seed=3),
                    None)


def keys(part: Interactions) -> np.ndarray:
    return part.user_rows * part.n_items + part.item_rows


@pytest.mark.parametrize("kind", SPLIT_KINDS)
def test_parts_are_disjoint_and_cover_the_input(inter: Interactions, kind: str) -> None:
    split = make_split(inter, kind, seed=0)
    parts = [keys(split.train), keys(split.valid), keys(split.test)]
    assert len(np.unique(np.concatenate(parts))) == sum(len(p) for p in parts)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.sort(keys(inter)))
    for part in (split.train, split.valid, split.test):
        assert part.users is inter.users and part.items is inter.items
    assert split.kind == kind and split.seed == 0


@pytest.mark.parametrize("kind", SPLIT_KINDS)
def test_seeded(inter: Interactions, kind: str) -> None:
    drop_ts = inter.select(np.arange(len(inter)))
    drop_ts = Interactions(drop_ts.user_rows, drop_ts.item_rows, drop_ts.weights, None,
                           drop_ts.users, drop_ts.items)  # loo is only random without times
    a, b, c = (make_split(drop_ts, kind, seed) for seed in (7, 7, 8))
    assert np.array_equal(keys(a.test), keys(b.test))
    assert np.array_equal(keys(a.valid), keys(b.valid))
    assert not np.array_equal(np.sort(keys(a.test)), np.sort(keys(c.test)))


def test_per_user_proportions(inter: Interactions) -> None:
    split = per_user(inter, seed=1)
    count = np.bincount(inter.user_rows, minlength=inter.n_users)
    assert (count == 20).all()
    for part, expected in ((split.train, 16), (split.valid, 2), (split.test, 2)):
        assert (np.bincount(part.user_rows, minlength=inter.n_users) == expected).all()


@pytest.mark.parametrize("c, expected", [(1, (1, 0, 0)), (2, (2, 0, 0)), (4, (4, 0, 0)),
                                         (5, (3, 1, 1)), (10, (8, 1, 1)), (15, (11, 2, 2))])
def test_per_user_rounding_rule(c: int, expected: tuple[int, int, int]) -> None:
    small = Interactions.from_ids(["u"] * c, [f"i{j}" for j in range(c)])
    split = per_user(small, seed=0)
    assert (len(split.train), len(split.valid), len(split.test)) == expected


def test_per_user_keeps_a_train_item_with_extreme_fractions() -> None:
    small = Interactions.from_ids(["u", "u"], ["a", "b"])
    split = per_user(small, seed=0, fractions=(0.0, 0.5, 0.5))
    assert (len(split.train), len(split.valid), len(split.test)) == (1, 0, 1)
    with pytest.raises(DataError, match="fractions"):
        per_user(small, fractions=(0.5, 0.5, 0.5))


def test_global_proportions(inter: Interactions) -> None:
    split = global_(inter)
    n = len(inter)
    n_test = int(np.ceil(0.2 * n))
    assert len(split.test) == n_test
    assert len(split.valid) == int(np.ceil(0.1 * (n - n_test)))
    assert split.seed == 2021
    assert abs(len(split.train) / n - 0.72) < 0.01


def test_global_matches_sklearn_train_test_split(inter: Interactions) -> None:
    model_selection = pytest.importorskip("sklearn.model_selection")
    rows = np.arange(len(inter))
    rest, test = model_selection.train_test_split(rows, test_size=0.2, random_state=2021)
    train, valid = model_selection.train_test_split(rest, test_size=0.1, random_state=2021)
    split = global_(inter, seed=2021)
    assert np.array_equal(np.sort(keys(inter.select(np.sort(test)))), np.sort(keys(split.test)))
    assert np.array_equal(np.sort(keys(inter.select(np.sort(valid)))),
                          np.sort(keys(split.valid)))


def test_leave_one_out_picks_latest_by_timestamp() -> None:
    users = ["a"] * 4 + ["b"] * 3 + ["c"] * 2
    items = ["w", "x", "y", "z", "x", "y", "z", "x", "y"]
    times = [40, 10, 30, 20, 5, 7, 6, 1, 2]
    inter = Interactions.from_ids(users, items, timestamps=times)
    split = leave_one_out(inter, seed=0)
    test = {(inter.users.ids[u], inter.items.ids[i])
            for u, i in zip(split.test.user_rows, split.test.item_rows, strict=True)}
    valid = {(inter.users.ids[u], inter.items.ids[i])
             for u, i in zip(split.valid.user_rows, split.valid.item_rows, strict=True)}
    assert test == {("a", "w"), ("b", "y")}
    assert valid == {("a", "y"), ("b", "z")}
    assert len(split.train) == 5  # c has < 3 interactions: both stay in train


def test_leave_one_out_counts(inter: Interactions) -> None:
    split = leave_one_out(inter, seed=0)
    assert (np.bincount(split.test.user_rows, minlength=inter.n_users) == 1).all()
    assert (np.bincount(split.valid.user_rows, minlength=inter.n_users) == 1).all()
    ts = inter.timestamps
    assert ts is not None and split.test.timestamps is not None
    latest = np.zeros(inter.n_users, np.int64)
    np.maximum.at(latest, inter.user_rows, ts)
    assert np.array_equal(split.test.timestamps, latest[split.test.user_rows])


def test_make_split_aliases_and_unknown_kind(inter: Interactions) -> None:
    assert make_split(inter, "per_user", 0).kind == "per-user"
    with pytest.raises(DataError, match="per-user, global, leave-one-out"):
        make_split(inter, "temporal", 0)


def test_seen_csr(inter: Interactions) -> None:
    split = per_user(inter, seed=0)
    train = split.train_csr()
    assert train.shape == (inter.n_users, inter.n_items) and train.nnz == len(split.train)
    seen = split.seen_csr("test")
    assert seen.nnz == len(split.train) + len(split.valid) and set(seen.data) == {1.0}
    assert split.seen_csr("valid").nnz == len(split.train)
    assert split.sizes() == {"train": len(split.train), "valid": len(split.valid),
                             "test": len(split.test)}


def test_split_requires_shared_maps() -> None:
    a = Interactions.from_ids(["u"], ["i"])
    b = Interactions.from_ids(["u"], ["i"])
    with pytest.raises(DataError, match="share"):
        Split(a, b, a, "per-user", 0)


@pytest.mark.parametrize("kind", SPLIT_KINDS)
def test_empty_log_is_an_error(kind: str) -> None:
    empty = Interactions.from_ids(["u"], ["i"]).select(np.zeros(1, bool))
    with pytest.raises(DataError, match="empty"):
        make_split(empty, kind, 0)
