"""OverlayIndex: a FAISS index's neighbours merged with extra rows, hidden rows dropped, as
one exact index over the whole extended table would answer (issue 20)."""

from __future__ import annotations

import tracemalloc

import faiss
import numpy as np
import pytest

from service.item_overlay import OverlayIndex, StackedRows


def _tables(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(60, 8)).astype(np.float32)
    extra = rng.normal(size=(5, 8)).astype(np.float32)
    queries = rng.normal(size=(7, 8)).astype(np.float32)
    return base, extra, queries


def test_overlay_search_equals_exact_search_over_the_extended_table() -> None:
    base, extra, queries = _tables()
    index = faiss.IndexFlatL2(8)
    index.add(base)
    hidden = np.array([3, 61], np.int64)  # one trained row, one extra row
    overlay = OverlayIndex(index, extra, 60, hidden)
    assert overlay.ntotal == 65 and overlay.d == 8
    dist, rows = overlay.search(queries, 10)
    full = np.concatenate([base, extra])
    exact = ((queries[:, None, :] - full[None]) ** 2).sum(-1)  # [Q, 65]
    exact[:, hidden] = np.inf
    expected = np.argsort(exact, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(dist, np.take_along_axis(exact, expected, 1), rtol=1e-4,
                               atol=1e-4)
    assert not np.isin(rows, hidden).any()


def test_overlay_search_honours_an_id_selector_and_pads_like_faiss() -> None:
    base, extra, queries = _tables(1)
    index = faiss.IndexFlatL2(8)
    index.add(base)
    overlay = OverlayIndex(index, extra, 60, np.array([62], np.int64))
    allow = np.array([1, 2, 61, 62, 64], np.int64)
    params = faiss.SearchParameters()
    selector = faiss.IDSelectorBatch(allow)
    params.sel = selector
    dist, rows = overlay.search(queries, 6, params=params)
    for q in range(len(queries)):
        got = rows[q][rows[q] >= 0]
        assert set(got) == {1, 2, 61, 64}  # 62 hidden; the rest of the list, nothing else
        assert (np.diff(dist[q][: len(got)]) >= 0).all()
    assert (rows[:, 4:] == -1).all() and np.isinf(dist[:, 4:]).all()


def test_stacked_rows_read_as_the_concatenated_table() -> None:
    base, extra, _ = _tables(2)
    stacked = StackedRows(base, extra)
    full = np.concatenate([base, extra])
    assert stacked.shape == full.shape and len(stacked) == 65 and stacked.dtype == full.dtype
    rows = np.array([[0, 59, 60], [64, -1, -65]])  # both tables, the seam, negatives
    np.testing.assert_array_equal(stacked[rows], full[rows])
    for key in (slice(0, 60), slice(58, 63), slice(61, None), slice(None, None, 7),
                slice(10, 2)):
        np.testing.assert_array_equal(stacked[key], full[key])
    np.testing.assert_array_equal(stacked[62], full[62])
    np.testing.assert_array_equal(stacked[np.array([], np.int64)], full[np.array([], np.int64)])
    np.testing.assert_array_equal(np.asarray(stacked), full)
    for bad in (65, -66, np.array([3, 70])):
        with pytest.raises(IndexError):
            stacked[bad]


def test_a_placed_item_does_not_copy_the_artifact_table() -> None:
    """After a PUT a worker must go on sharing the artifact's mapped table (issue 21): the
    overlay allocates the placed rows, not the trained ones again."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(50_000, 32)).astype(np.float32)  # 6.4 MB
    extra = rng.normal(size=(2, 32)).astype(np.float32)
    tracemalloc.start()
    try:
        stacked = StackedRows(base, extra)
        got = stacked[np.array([[1, 50_001]])]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < base.nbytes // 20
    np.testing.assert_array_equal(got[0], np.stack([base[1], extra[1]]))
    assert np.shares_memory(stacked[0:10], base)  # a slice of trained rows is a view
