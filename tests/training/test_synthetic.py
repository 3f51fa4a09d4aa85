"""Synthetic logs: planted blocks, popularity skew, ratings, timestamps, and the CSV sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.filters import binarize, k_core
from training.interactions import DataError, Interactions
from training.readers import read_log
from training.synthetic import planted_interactions, planted_truth, write_sample


def in_block(inter: Interactions) -> np.ndarray:
    community, block = planted_truth(inter)
    return block[inter.item_rows] == community[inter.user_rows]


def test_shape_and_distinct_items() -> None:
    inter = planted_interactions(n_users=50, n_items=40, n_communities=4, items_per_user=10)
    assert inter.n_users == 50 and len(inter) == 500
    assert (np.bincount(inter.user_rows) == 10).all()
    assert len(np.unique(inter.user_rows * inter.n_items + inter.item_rows)) == len(inter)
    community, block = planted_truth(inter)
    sizes = np.bincount(community)
    assert len(sizes) == 4 and sizes.max() - sizes.min() <= 1  # balanced communities
    assert set(block.tolist()) == {0, 1, 2, 3}


def test_planted_structure() -> None:
    inter = planted_interactions(noise=0.05, seed=1)
    hit = in_block(inter)
    per_user = np.bincount(inter.user_rows, weights=hit) / np.bincount(inter.user_rows)
    assert hit.mean() > 0.9
    assert (per_user >= 0.7).mean() > 0.95  # most of each user's items are in their block


def test_noise_moves_items_out_of_the_block() -> None:
    clean = in_block(planted_interactions(noise=0.0)).mean()
    noisy = in_block(planted_interactions(noise=0.5)).mean()
    assert clean == 1.0 and 0.45 < noisy < 0.75


def test_popularity_skew() -> None:
    def top_share(skew: float) -> float:
        pop = np.sort(planted_interactions(popularity_skew=skew, seed=2).item_popularity())
        return pop[-len(pop) // 10:].sum() / pop.sum()  # share of the top 10% items

    # skew 0 is near-uniform (the top 10% hold ~12%); skew 1 is capped by sampling without
    # replacement (a head item can go to at most every user of its community), ~23%
    assert top_share(1.0) > 1.6 * top_share(0.0)
    inter = planted_interactions(popularity_skew=1.0, seed=2)
    pop = inter.item_popularity()
    index = np.array([int(i.split("-")[0][1:]) for i in inter.items.to_list()])
    _, block = planted_truth(inter)
    first = index == np.array([index[block == b].min() for b in block])
    assert pop[first].min() > np.median(pop)  # each block's head item is popular


def test_ratings_favour_the_block() -> None:
    inter = planted_interactions(noise=0.2)
    hit = in_block(inter)
    assert set(np.unique(inter.weights)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert (inter.weights[hit] >= 4).mean() > 0.8
    assert (inter.weights[~hit] >= 4).mean() < 0.3
    assert in_block(binarize(inter, 4.0)).mean() > hit.mean()


def test_truth_survives_filters() -> None:
    inter = k_core(binarize(planted_interactions(seed=4), 4.0), 5)
    assert in_block(inter).mean() > 0.9
    assert len(planted_truth(inter)[0]) == inter.n_users


def test_timestamps_and_seed() -> None:
    inter = planted_interactions(seed=5)
    assert inter.timestamps is not None and (np.diff(inter.timestamps) > 0).all()
    assert planted_interactions(with_timestamps=False).timestamps is None
    again = planted_interactions(seed=5)
    assert inter.fingerprint() == again.fingerprint()
    assert inter.fingerprint() != planted_interactions(seed=6).fingerprint()


def test_truth_rejects_foreign_ids() -> None:
    with pytest.raises(DataError, match="planted_interactions"):
        planted_truth(Interactions.from_ids(["alice"], ["x"]))


@pytest.mark.parametrize("kwargs", [{"n_communities": 0}, {"items_per_user": 500},
                                    {"noise": 1.5}, {"popularity_skew": -1.0}])
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(DataError):
        planted_interactions(**kwargs)


def test_write_sample_round_trip(tmp_path: Path) -> None:
    path = write_sample(tmp_path / "sample" / "log.csv", n_users=30, n_items=20,
                        items_per_user=5, seed=9)
    assert path.read_text().splitlines()[0] == "user,item,rating,timestamp"
    back = read_log(path)
    original = planted_interactions(n_users=30, n_items=20, items_per_user=5, seed=9)
    assert back.fingerprint() == original.fingerprint()
