"""Baselines on planted data: 4 user communities x 4 item blocks with popularity skew in each.

Margins were set at about half the smallest gap seen over data seeds 0-4 (ALS - most-popular
NDCG@10 >= 0.42, most-popular - random >= 0.062), so they hold with room to spare.
"""

from __future__ import annotations

import implicit.gpu
import numpy as np
import pytest

from training.baselines import ALSBaseline, EASEBaseline, MostPopular
from training.config import BaselineConfig
from training.evaluator import Scorer, full_ranking, top_k
from training.interactions import Interactions
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


def test_defaults_are_the_configs_and_unfitted_raises():
    model, cfg = ALSBaseline(), BaselineConfig()
    assert (model.factors, model.iterations, model.regularization, model.alpha) == (
        cfg.factors, cfg.iterations, cfg.regularization, cfg.alpha)
    assert EASEBaseline().l2 == cfg.ease_l2
    for unfitted in (model, MostPopular(), EASEBaseline()):
        with pytest.raises(RuntimeError, match="fit"):
            unfitted.score(np.array([0]))


def _tiny(rows: list[list[int]]) -> Interactions:
    """A log from a dense 0/1 user x item matrix, user and item ids "u0".. / "i0"..."""
    users, items = np.nonzero(np.asarray(rows))
    return Interactions.from_ids([f"u{u}" for u in users], [f"i{i}" for i in items])


def test_ease_matches_the_closed_form_worked_by_hand():
    # X = [[1, 1], [1, 0]], λ = 1: XᵀX + λI = [[3, 1], [1, 2]], P = [[2, -1], [-1, 3]] / 5,
    # B = I − P·diagMat(1/diag P) = [[0, 1/3], [1/2, 0]] (Steck 2019, Algorithm 1).
    ease = EASEBaseline(l2=1.0).fit(_tiny([[1, 1], [1, 0]]))
    np.testing.assert_allclose(ease.weights, [[0.0, 1 / 3], [0.5, 0.0]], rtol=1e-6)
    # user 1 holds item 0 only: its scores are row 0 of B
    np.testing.assert_allclose(ease.score(np.array([1])), [[0.0, 1 / 3]], rtol=1e-6)
    np.testing.assert_allclose(ease.score_items(np.array([1, 0]), np.array([[1], [0]])),
                               [[1 / 3], [0.0 + 1 / 2]], rtol=1e-6)  # user 0: B₀₀ + B₁₀


def test_ease_beats_most_popular_on_planted_data(split: Split):
    pop = _ndcg(MostPopular().fit(split.train), split)
    assert _ndcg(EASEBaseline(l2=10.0).fit(split.train), split) >= pop + 0.2


@pytest.mark.parametrize("alpha", [0.0, 4.0])
def test_als_solves_hu_et_al_with_confidence_one_plus_alpha(alpha: float):
    """The last half-step of ALS solves every item's normal equations given the users:
    (Xᵀ C_i X + λI) y_i = Xᵀ C_i p_i with c = 1 + α on positives and 1 elsewhere (Hu et al.
    2008, eq. 4). Two factors, so implicit's 3-step conjugate gradient solves them exactly.
    """
    x = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1], [1, 0, 0, 1]])
    reg = 0.5
    als = ALSBaseline(factors=2, iterations=15, regularization=reg, alpha=alpha,
                      seed=0).fit(_tiny(x.tolist()))
    users, items = als.user_factors.astype(np.float64), als.item_factors.astype(np.float64)
    assert als.confidence == 1.0 + alpha

    def residual(c_pos: float) -> float:
        worst = 0.0
        for i in range(x.shape[1]):
            c = np.where(x[:, i] > 0, c_pos, 1.0)  # [U]
            a = users.T @ (c[:, None] * users) + reg * np.eye(2)
            b = users.T @ (c * x[:, i])
            worst = max(worst, float(np.abs(a @ items[i] - b).max()))
        return worst

    assert residual(1.0 + alpha) < 1e-4
    assert residual(alpha if alpha else 2.0) > 1e-2  # implicit's stored value is not α


@pytest.mark.skipif(implicit.gpu.HAS_CUDA, reason="checks the message shown without CUDA")
def test_use_gpu_without_cuda_says_so(split: Split):
    with pytest.raises(ValueError, match="use_gpu=False"):
        ALSBaseline(factors=2, iterations=1, use_gpu=True).fit(split.train)
