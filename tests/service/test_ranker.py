"""Ranker: one padded ORT call per batch gives exactly what scoring each request alone gives."""

from __future__ import annotations

import numpy as np
import pytest

from models.artifact_arrays import user_history
from service.loader import LoadedArtifact
from service.ranker import Ranker


def inputs(loaded: LoadedArtifact, users: list[int]) -> tuple[np.ndarray, ...]:
    l_max = loaded.l_max
    vecs = np.asarray(loaded.arrays.users[users], np.float32)
    rows = np.zeros((len(users), l_max), np.int64)
    mask = np.zeros((len(users), l_max), np.float32)
    for b, u in enumerate(users):
        h = user_history(loaded.arrays, u)[:l_max]
        rows[b, : len(h)], mask[b, : len(h)] = h, 1.0
    return vecs, rows, mask


def exact(
    loaded: LoadedArtifact, vecs: np.ndarray, rows: np.ndarray, mask: np.ndarray, cands: np.ndarray
) -> np.ndarray:
    (dist,) = loaded.session.run(
        ["distances"], {"user_vecs": vecs, "hist_rows": rows, "hist_mask": mask, "cand_rows": cands}
    )
    return np.asarray(dist)


@pytest.fixture(scope="module")
def ranker(loaded: LoadedArtifact) -> Ranker:
    return Ranker(loaded.session, loaded.l_max, loaded.has_attention)


def test_top_k_matches_full_scoring(loaded: LoadedArtifact, ranker: Ranker) -> None:
    users = [0, 5, 17]
    vecs, rows, mask = inputs(loaded, users)
    all_items = np.arange(loaded.n_items)
    ranked = ranker.rank(vecs, rows, mask, [all_items] * 3, [10] * 3)
    full = exact(loaded, vecs, rows, mask, np.tile(all_items, (3, 1)))
    for b, r in enumerate(ranked):
        np.testing.assert_array_equal(r.rows, np.argsort(full[b], kind="stable")[:10])
        np.testing.assert_allclose(r.distances, np.sort(full[b])[:10], rtol=1e-6)
        assert r.attention is None


def test_padded_batch_equals_requests_alone(loaded: LoadedArtifact, ranker: Ranker) -> None:
    rng = np.random.default_rng(0)
    users = [1, 2, 3, 4]
    vecs, rows, mask = inputs(loaded, users)
    cands = [rng.choice(loaded.n_items, size=n, replace=False) for n in (40, 3, 17, 1)]
    ks = [5, 10, 17, 1]
    together = ranker.rank(vecs, rows, mask, cands, ks, explain=True)
    for b in range(4):
        alone = ranker.rank(
            vecs[b : b + 1], rows[b : b + 1], mask[b : b + 1], [cands[b]], [ks[b]], explain=True
        )[0]
        np.testing.assert_array_equal(together[b].rows, alone.rows)
        np.testing.assert_allclose(together[b].distances, alone.distances, rtol=1e-5, atol=1e-6)
        assert len(alone.rows) == min(ks[b], len(cands[b]))
        assert set(alone.rows) <= set(cands[b].tolist())


def test_attention_explains_the_history(loaded: LoadedArtifact, ranker: Ranker) -> None:
    assert loaded.has_attention  # the tiny artifact is an HLR
    vecs, rows, mask = inputs(loaded, [7])
    (r,) = ranker.rank(vecs, rows, mask, [np.arange(loaded.n_items)], [5], explain=True)
    assert r.attention is not None and r.attention.shape == (5, loaded.l_max)
    assert np.all(r.attention >= 0) and np.all(r.attention.sum(axis=1) <= 1 + 1e-5)
    assert np.all(r.attention[:, mask[0] == 0] == 0)  # pads never explain anything


def test_empty_and_short_candidate_lists(loaded: LoadedArtifact, ranker: Ranker) -> None:
    vecs, rows, mask = inputs(loaded, [0, 1])
    out = ranker.rank(vecs, rows, mask, [np.zeros(0, np.int64), np.array([3, 4])], [10, 10])
    assert len(out[0].rows) == 0 and sorted(out[1].rows.tolist()) == [3, 4]
    assert ranker.rank(vecs, rows, mask, [np.zeros(0, np.int64)] * 2, [3, 3])[0].rows.size == 0
