"""Top-K metrics against values worked out by hand (in the style of RecBole's
tests/metrics/test_topk_metrics.py): the arithmetic is in the comments next to each expectation.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from training.metrics import (
    hit_rate_at_k,
    hits_at_k,
    map_at_k,
    median_popularity,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)

LOG2_3 = np.log2(3.0)
LOG2_6 = np.log2(6.0)

# Three users, K = 5.
#   user A: top [1, 2, 3, 4, 5], test {1, 3, 9} -> hits [1, 0, 1, 0, 0], |test| = 3
#   user B: top [6, 7, 8, 9, 10], test {10}     -> hits [0, 0, 0, 0, 1], |test| = 1
#   user C: top [1, 2, 3, 4, 5], test {11, 12}  -> hits [0, 0, 0, 0, 0], |test| = 2
TOP = np.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [1, 2, 3, 4, 5]])
RELEVANT = [np.array([1, 3, 9]), np.array([10]), np.array([11, 12])]


@pytest.fixture
def hits_and_n() -> tuple[np.ndarray, np.ndarray]:
    return hits_at_k(TOP, RELEVANT)


def test_hits_at_k_marks_relevant_positions(hits_and_n):
    hits, n_relevant = hits_and_n
    expected = [[1, 0, 1, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]
    np.testing.assert_array_equal(hits, np.array(expected, dtype=bool))
    np.testing.assert_array_equal(n_relevant, [3, 1, 2])


def test_hits_at_k_accepts_csr_dense_and_lists(hits_and_n):
    hits, n_relevant = hits_and_n
    dense = np.zeros((3, 13), dtype=bool)
    for row, items in enumerate(RELEVANT):
        dense[row, items] = True
    for relevant in (dense, sparse.csr_matrix(dense), sparse.csr_matrix(dense).tocoo()):
        h, n = hits_at_k(TOP, relevant)
        np.testing.assert_array_equal(h, hits)
        np.testing.assert_array_equal(n, n_relevant)


def test_precision(hits_and_n):
    hits, _ = hits_and_n
    # A: 2 hits / 5 = 0.4; B: 1 / 5 = 0.2; C: 0 / 5 = 0
    np.testing.assert_allclose(precision_at_k(hits), [0.4, 0.2, 0.0])


def test_recall(hits_and_n):
    hits, n = hits_and_n
    # A: 2 hits / |test| 3; B: 1 / 1; C: 0 / 2
    np.testing.assert_allclose(recall_at_k(hits, n), [2 / 3, 1.0, 0.0])


def test_ndcg(hits_and_n):
    hits, n = hits_and_n
    # A: DCG = 1/log2(2) + 1/log2(4) = 1 + 0.5 = 1.5
    #    IDCG over min(3, 5) = 3 positions = 1 + 1/log2(3) + 1/log2(4) = 2.1309...
    #    NDCG = 1.5 / 2.1309 = 0.7039...
    # B: DCG = 1/log2(6) = 0.3869; IDCG over min(1, 5) = 1 position = 1 -> 0.3869
    # C: no hit -> 0
    idcg_a = 1 + 1 / LOG2_3 + 0.5
    np.testing.assert_allclose(ndcg_at_k(hits, n), [1.5 / idcg_a, 1 / LOG2_6, 0.0])
    assert ndcg_at_k(hits, n)[0] == pytest.approx(0.70392, abs=1e-5)


def test_map(hits_and_n):
    hits, n = hits_and_n
    # A: hits at ranks 1 and 3: P@1 = 1/1, P@3 = 2/3; AP = (1 + 2/3) / min(3, 5) = 0.5556
    # B: hit at rank 5: P@5 = 1/5; AP = 0.2 / min(1, 5) = 0.2
    # C: 0
    np.testing.assert_allclose(map_at_k(hits, n), [(1 + 2 / 3) / 3, 0.2, 0.0])


def test_mrr(hits_and_n):
    hits, _ = hits_and_n
    # A: first hit at rank 1 -> 1; B: rank 5 -> 1/5; C: no hit -> 0
    np.testing.assert_allclose(mrr_at_k(hits), [1.0, 0.2, 0.0])


def test_hit_rate(hits_and_n):
    hits, _ = hits_and_n
    np.testing.assert_allclose(hit_rate_at_k(hits), [1.0, 1.0, 0.0])


def test_truncation_to_smaller_k(hits_and_n):
    hits, n = hits_and_n
    # @2: A hits [1, 0]: P = 1/2, R = 1/3, NDCG = 1 / IDCG(min(3, 2) = 2) = 1 / (1 + 1/log2 3),
    #     AP = (P@1 = 1) / min(3, 2) = 0.5, RR = 1; B and C have no hit in the first two.
    np.testing.assert_allclose(precision_at_k(hits, k=2), [0.5, 0.0, 0.0])
    np.testing.assert_allclose(recall_at_k(hits, n, k=2), [1 / 3, 0.0, 0.0])
    np.testing.assert_allclose(ndcg_at_k(hits, n, k=2), [1 / (1 + 1 / LOG2_3), 0.0, 0.0])
    np.testing.assert_allclose(map_at_k(hits, n, k=2), [0.5, 0.0, 0.0])
    np.testing.assert_allclose(mrr_at_k(hits, k=2), [1.0, 0.0, 0.0])


def test_no_hits_gives_zero_everywhere():
    hits, n = hits_at_k(np.array([[0, 1, 2]]), [np.array([7, 8])])
    for value in (precision_at_k(hits), recall_at_k(hits, n), ndcg_at_k(hits, n),
                  map_at_k(hits, n), mrr_at_k(hits), hit_rate_at_k(hits)):
        np.testing.assert_array_equal(value, [0.0])


def test_more_test_items_than_k():
    # K = 2, test {1, 2, 3, 4}, top [1, 2]: both slots hit.
    hits, n = hits_at_k(np.array([[1, 2]]), [np.array([1, 2, 3, 4])])
    # recall = 2 / |test| 4 = 0.5: the list cannot hold every test item, recall says so.
    np.testing.assert_allclose(recall_at_k(hits, n), [0.5])
    # IDCG over min(4, 2) = 2 positions equals DCG: NDCG = 1 for the best possible list.
    np.testing.assert_allclose(ndcg_at_k(hits, n), [1.0])
    # AP = (P@1 + P@2) / min(4, 2) = (1 + 1) / 2 = 1.
    np.testing.assert_allclose(map_at_k(hits, n), [1.0])
    np.testing.assert_allclose(precision_at_k(hits), [1.0])


def test_fewer_test_items_than_k():
    # K = 4, test {1}, top [5, 1, 6, 7]: one hit at rank 2.
    hits, n = hits_at_k(np.array([[5, 1, 6, 7]]), [np.array([1])])
    # NDCG = (1/log2 3) / IDCG over min(1, 4) = 1 position (= 1) = 0.6309
    np.testing.assert_allclose(ndcg_at_k(hits, n), [1 / LOG2_3])
    # AP = P@2 / min(1, 4) = (1/2) / 1 = 0.5; with division by K it would wrongly be 0.125.
    np.testing.assert_allclose(map_at_k(hits, n), [0.5])
    np.testing.assert_allclose(precision_at_k(hits), [0.25])
    np.testing.assert_allclose(recall_at_k(hits, n), [1.0])


def test_empty_slots_never_hit():
    # -1 marks a slot with no item (fewer rankable items than K): never a hit, still counted in K.
    hits, n = hits_at_k(np.array([[3, -1, -1]]), [np.array([3, 0])])
    np.testing.assert_array_equal(hits, [[True, False, False]])
    np.testing.assert_allclose(precision_at_k(hits), [1 / 3])


def test_user_without_relevant_items_is_rejected():
    hits, n = hits_at_k(np.array([[0, 1]]), [np.array([], dtype=np.int64)])
    with pytest.raises(ValueError, match="relevant item"):
        recall_at_k(hits, n)
    with pytest.raises(ValueError, match="relevant item"):
        ndcg_at_k(hits, n)


def test_median_popularity_counts_distinct_items():
    popularity = np.array([10, 3, 7, 100])
    # distinct recommended items {0, 1, 2} -> popularities [10, 3, 7] -> median 7.
    # (Counting item 1 twice, [10, 3, 3, 7], would give 5.) The -1 slot is ignored.
    top = np.array([[0, 1], [1, 2], [-1, 1]])
    assert median_popularity(top, popularity) == 7.0
