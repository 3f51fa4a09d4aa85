"""Baselines on planted data: 4 user communities x 4 item blocks with popularity skew in each.

Margins were set at about half the smallest gap seen over data seeds 0-4 (ALS - most-popular
NDCG@10 >= 0.42, most-popular - random >= 0.062), so they hold with room to spare.
"""

from __future__ import annotations

import implicit.gpu
import numpy as np
import pytest

from training.baselines import ALSBaseline, MostPopular
from training.evaluator import Scorer, full_ranking, top_k
from training.splits import Split, per_user
from training.synthetic import planted_interactions


class RandomScorer:
    """Uniform random scores: the floor both baselines must clear."""

    def __init__(self, n_items: int, seed: int = 0) -> None:
        self.n_items = n_items
        self.rng = np.random.default_rng(seed)

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        return self.rng.random((len(user_rows), self.n_items))

    def score_items(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        return self.rng.random(item_rows.shape)


@pytest.fixture(scope="module")
def split() -> Split:
    inter = planted_interactions(n_users=200, n_items=120, n_communities=4, items_per_user=10,
                                 noise=0.05, popularity_skew=1.5, seed=0, with_timestamps=False)
    return per_user(inter, seed=0)


@pytest.fixture(scope="module")
def als(split: Split) -> ALSBaseline:
    # Small factors and lambda for 200 x 120 data; the DESIGN defaults (100 factors, lambda 30)
    # are sized for MovieLens.
    return ALSBaseline(factors=8, iterations=10, regularization=1.0, seed=0).fit(split.train)


def _ndcg(scorer: Scorer, split: Split) -> float:
    return full_ranking(scorer, split, k=10, progress=False).means()["ndcg"]


def test_als_beats_most_popular_beats_random(split: Split, als: ALSBaseline):
    pop = _ndcg(MostPopular().fit(split.train), split)
    rnd = _ndcg(RandomScorer(split.train.n_items), split)
    assert _ndcg(als, split) >= pop + 0.2
    assert pop >= rnd + 0.03


def test_most_popular_ranks_the_most_frequent_item_first(split: Split):
    popularity = split.train.item_popularity()
    scores = MostPopular().fit(split.train).score(np.array([0, 5]))  # [2, V]
    np.testing.assert_array_equal(top_k(scores, 1)[:, 0], np.argmax(popularity))
    np.testing.assert_array_equal(scores[0], scores[1])  # not personalised


@pytest.mark.parametrize("make", [MostPopular, lambda: ALSBaseline(factors=4, iterations=2)])
def test_score_items_agrees_with_score(split: Split, make):
    scorer = make().fit(split.train)
    users = np.array([0, 3, 7])
    items = np.array([[0, 1, 2], [5, 4, 3], [9, 9, 0]])
    np.testing.assert_allclose(scorer.score_items(users, items),
                               np.take_along_axis(scorer.score(users), items, axis=1),
                               rtol=1e-5)


def test_als_factors_are_cpu_numpy_and_seeded(split: Split, als: ALSBaseline):
    assert isinstance(als.user_factors, np.ndarray) and als.user_factors.dtype == np.float32
    assert als.user_factors.shape == (split.train.n_users, 8)
    assert als.item_factors.shape == (split.train.n_items, 8)
    again = ALSBaseline(factors=8, iterations=10, regularization=1.0, seed=0).fit(split.train)
    np.testing.assert_allclose(again.item_factors, als.item_factors, rtol=1e-4, atol=1e-6)


def test_defaults_follow_design_and_unfitted_raises():
    model = ALSBaseline()
    assert (model.factors, model.iterations, model.regularization) == (100, 20, 30.0)
    with pytest.raises(RuntimeError, match="fit"):
        model.score(np.array([0]))
    with pytest.raises(RuntimeError, match="fit"):
        MostPopular().score(np.array([0]))


@pytest.mark.skipif(implicit.gpu.HAS_CUDA, reason="checks the message shown without CUDA")
def test_use_gpu_without_cuda_says_so(split: Split):
    with pytest.raises(ValueError, match="use_gpu=False"):
        ALSBaseline(factors=2, iterations=1, use_gpu=True).fit(split.train)
