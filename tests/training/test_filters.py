"""Filters: binarize threshold and duplicates, k-core fixed point and cascade, empty errors."""

from __future__ import annotations

import numpy as np
import pytest

from training.filters import binarize, k_core
from training.interactions import DataError, Interactions


def pairs(inter: Interactions) -> list[tuple[str, str]]:
    return [(str(inter.users.ids[u]), str(inter.items.ids[i]))
            for u, i in zip(inter.user_rows, inter.item_rows, strict=True)]


def test_binarize_threshold_and_densify() -> None:
    inter = Interactions.from_ids(["a", "a", "b", "c", "c"], ["x", "y", "x", "z", "x"],
                                  weights=[5, 3, 4, 1, 3.5])
    out = binarize(inter, min_rating=4.0)
    assert pairs(out) == [("a", "x"), ("b", "x")]
    assert out.weights.tolist() == [1.0, 1.0]
    assert out.users.to_list() == ["a", "b"]  # c had no positive: dropped from the map
    assert out.items.to_list() == ["x"]
    assert out.user_rows.max() < out.n_users and out.item_rows.max() < out.n_items


def test_binarize_none_keeps_everything() -> None:
    inter = Interactions.from_ids(["a", "b"], ["x", "y"], weights=[1, 2])
    out = binarize(inter, min_rating=None)
    assert pairs(out) == [("a", "x"), ("b", "y")] and out.weights.tolist() == [1.0, 1.0]


def test_binarize_collapses_duplicates_keeping_latest() -> None:
    inter = Interactions.from_ids(["a", "a", "b", "a"], ["x", "x", "y", "x"],
                                  weights=[5, 4, 5, 5], timestamps=[30, 50, 10, 20])
    out = binarize(inter, 4.0)
    assert sorted(pairs(out)) == [("a", "x"), ("b", "y")]
    assert out.timestamps is not None
    assert dict(zip(pairs(out), out.timestamps.tolist(), strict=True))[("a", "x")] == 50


def test_binarize_empty_names_the_filter() -> None:
    inter = Interactions.from_ids(["a"], ["x"], weights=[1.0])
    with pytest.raises(DataError, match=r"binarize with min_rating=4.0 left no interactions"):
        binarize(inter, 4.0)


def naive_k_core(rows: set[tuple[int, int]], k: int) -> set[tuple[int, int]]:
    """Reference k-core, one row at a time (slow, obviously right)."""
    rows = set(rows)
    while True:
        users = {u for u, _ in rows}
        items = {i for _, i in rows}
        u_cnt = {u: sum(1 for r in rows if r[0] == u) for u in users}
        i_cnt = {i: sum(1 for r in rows if r[1] == i) for i in items}
        keep = {r for r in rows if u_cnt[r[0]] >= k and i_cnt[r[1]] >= k}
        if keep == rows:
            return rows
        rows = keep


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k_core_reaches_the_fixed_point(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_items, k = 60, 40, 4
    dense = rng.random((n_users, n_items)) < rng.random(n_users)[:, None] * 0.25
    users, items = np.nonzero(dense)
    inter = Interactions.from_ids([f"u{u}" for u in users], [f"i{i}" for i in items])
    out = k_core(inter, k)
    assert np.bincount(out.user_rows).min() >= k
    assert np.bincount(out.item_rows).min() >= k
    assert np.bincount(out.user_rows).size == out.n_users  # densified: no empty rows
    assert np.bincount(out.item_rows).size == out.n_items
    expected = naive_k_core(set(zip(users.tolist(), items.tolist(), strict=True)), k)
    got = {(int(u[1:]), int(i[1:])) for u, i in pairs(out)}
    assert got == expected


def test_k_core_cascade() -> None:
    # A chain a-x, a-y, b-y, b-z, c-z, c-w hanging off a solid 2-core d,e x p,q. With k=2 only
    # w (and x) are short at first; dropping them starves c, then z, then b, then y, then a.
    rows = [("a", "x"), ("a", "y"), ("b", "y"), ("b", "z"), ("c", "z"), ("c", "w"),
            ("d", "p"), ("d", "q"), ("e", "p"), ("e", "q")]
    inter = Interactions.from_ids([u for u, _ in rows], [i for _, i in rows],
                                  weights=np.arange(10), timestamps=np.arange(10) * 7)
    out = k_core(inter, 2)
    assert pairs(out) == rows[6:]
    assert out.users.to_list() == ["d", "e"] and out.items.to_list() == ["p", "q"]
    assert out.weights.tolist() == [6, 7, 8, 9]  # rows keep their weights and timestamps
    assert out.timestamps is not None and out.timestamps.tolist() == [42, 49, 56, 63]


def test_k_core_of_one_only_densifies() -> None:
    inter = Interactions.from_ids(["a", "b"], ["x", "y"])
    sub = inter.select(np.array([1]))  # maps still hold a and x
    out = k_core(sub, 1)
    assert pairs(out) == [("b", "y")] and out.n_users == 1 and out.n_items == 1


def test_k_core_empty_names_the_filter_and_a_fix() -> None:
    inter = Interactions.from_ids(["a", "b"], ["x", "x"])
    with pytest.raises(DataError, match=r"k-core with k=10 left no interactions; try --k-core 5"):
        k_core(inter, 10)
