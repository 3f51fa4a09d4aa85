"""Sampler: negatives never hit a user's training items; histories are capped samples."""

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from training.sampler import NegativeSampler, inverse_popularity_weights, sample_history


def _csr(rows: list[list[int]], n_items: int) -> tuple[np.ndarray, np.ndarray]:
    data = [(u, i) for u, items in enumerate(rows) for i in items]
    u, i = zip(*data, strict=True)
    m = csr_matrix((np.ones(len(u)), (u, i)), shape=(len(rows), n_items))
    m.sort_indices()
    return m.indptr.astype(np.int64), m.indices.astype(np.int64)


def test_negatives_are_never_training_items() -> None:
    rng = np.random.default_rng(0)
    rows = [list(rng.choice(50, size=45, replace=False)) for _ in range(30)]
    indptr, indices = _csr(rows, 50)
    sampler = NegativeSampler(indptr, indices, 50)
    users = np.repeat(np.arange(30), 200)
    negs = sampler.sample(rng, users)
    for u, j in zip(users, negs, strict=True):
        assert j not in rows[u]
    # each user has exactly 5 non-items: all of them should be drawn over 200 tries
    assert all(len(set(negs[users == u])) == 5 for u in range(30))


def test_negatives_are_uniform_over_non_items() -> None:
    indptr, indices = _csr([[0, 1]], 10)
    negs = NegativeSampler(indptr, indices, 10).sample(np.random.default_rng(1),
                                                       np.zeros(8000, np.int64))
    counts = np.bincount(negs, minlength=10)
    assert counts[:2].sum() == 0
    assert np.all(np.abs(counts[2:] / 8000 - 1 / 8) < 0.02)


def test_user_with_every_item_is_refused() -> None:
    indptr, indices = _csr([[0, 1, 2]], 3)
    with pytest.raises(ValueError, match="every item"):
        NegativeSampler(indptr, indices, 3)


def test_history_excludes_positive_and_is_capped() -> None:
    rows = [list(range(0, 30)), [3, 4], [7]]
    indptr, indices = _csr(rows, 40)
    rng = np.random.default_rng(0)
    hist, mask = sample_history(rng, np.array([0, 1, 2]), indptr, indices, l_max=10,
                                exclude_rows=np.array([5, 4, 7]))
    assert hist.shape == (3, 10) and mask.dtype == bool
    assert mask.sum(1).tolist() == [10, 1, 0]  # capped; positive removed; empty
    assert 5 not in hist[0][mask[0]]
    assert len(set(hist[0][mask[0]])) == 10  # without replacement
    assert set(hist[0][mask[0]]) <= set(rows[0])
    assert hist[1][mask[1]].tolist() == [3]
    assert np.all(hist[~mask] == 0)  # pads hold row 0


def test_uniform_history_covers_items_evenly() -> None:
    indptr, indices = _csr([list(range(20))], 20)
    rng = np.random.default_rng(3)
    hist, mask = sample_history(rng, np.zeros(4000, np.int64), indptr, indices, l_max=5)
    counts = np.bincount(hist[mask], minlength=20) / 4000
    assert np.allclose(counts, 5 / 20, atol=0.03)


def test_inverse_popularity_favours_rare_items() -> None:
    indptr, indices = _csr([list(range(20))], 20)
    popularity = np.array([1000] * 10 + [1] * 10)
    rng = np.random.default_rng(4)
    hist, mask = sample_history(rng, np.zeros(2000, np.int64), indptr, indices, l_max=5,
                                item_weights=inverse_popularity_weights(popularity))
    picked = hist[mask]
    assert (picked >= 10).mean() > 0.95


def test_history_is_seeded() -> None:
    indptr, indices = _csr([list(range(30))] * 4, 30)
    a = sample_history(np.random.default_rng(7), np.arange(4), indptr, indices, 8)
    b = sample_history(np.random.default_rng(7), np.arange(4), indptr, indices, 8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
