"""Issue 18's per-request savings change no answer: on a fixed artifact the path with each of
them gives the same items with the same scores (to float tolerance) as the path without.

- histories padded once by the recommender and handed to the retriever and the ranker, against
  the retriever padding its own copy (the path before);
- the query parts computed once per version (the slot centroid), against per call;
- the micro-batch executors (thread, worker, inline) are covered in test_batching.py
  (`test_batched_answers_equal_one_at_a_time_answers`).
"""

from __future__ import annotations

import numpy as np
import pytest

from models.artifact_arrays import user_history
from service.history import open_history_store
from service.loader import LoadedArtifact
from service.ranker import Ranker
from service.recommender import Query, Recommender, Tables
from service.retriever import Retriever, pad_histories


def _users(a: LoadedArtifact, n: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """n trained users (vectors, histories newest first capped at L_max, seen rows), with
    an empty history among them so that the uniform-weight branch is exercised too."""
    rows = np.random.default_rng(3).choice(len(a.arrays.user_ids), n, replace=False)
    vecs = np.asarray(a.arrays.users[rows], np.float32)
    hists = [user_history(a.arrays, int(u))[: a.l_max] for u in rows]
    hists[1] = np.zeros(0, np.int64)
    seen = [np.unique(user_history(a.arrays, int(u))) for u in rows]
    return vecs, hists, seen


def _retriever(a: LoadedArtifact, probes: str = "relation") -> Retriever:
    return Retriever(a.index, a.arrays.items, a.arrays.keys, a.arrays.memories, 20,
                     probes=probes)  # type: ignore[arg-type]


def test_histories_padded_once_give_the_same_probes_and_candidates(
    loaded: LoadedArtifact,
) -> None:
    vecs, hists, seen = _users(loaded, 12)
    r = _retriever(loaded)
    padded = pad_histories(hists, loaded.l_max)  # L_max wide: wider than any history here
    assert padded[1].sum() == sum(len(h) for h in hists)
    np.testing.assert_allclose(
        r.relation_weights(vecs, hists, padded), r.relation_weights(vecs, hists),
        rtol=1e-6, atol=1e-7,
    )
    before = r.candidates(vecs, hists, seen)
    after = r.candidates(vecs, hists, seen, padded=padded)
    for x, y in zip(before, after, strict=True):
        np.testing.assert_array_equal(x, y)
    allows = [np.arange(0, loaded.n_items, 2, dtype=np.int64)] * len(hists)
    for x, y in zip(r.candidates_among(vecs, hists, allows),
                    r.candidates_among(vecs, hists, allows, padded=padded), strict=True):
        np.testing.assert_array_equal(x, y)


def test_an_all_empty_batch_gets_uniform_weights_padded_or_not(loaded: LoadedArtifact) -> None:
    vecs, _, _ = _users(loaded, 3)
    empty = [np.zeros(0, np.int64)] * 3
    r = _retriever(loaded)
    w = r.relation_weights(vecs, empty, pad_histories(empty, loaded.l_max))
    np.testing.assert_array_equal(w, r.relation_weights(vecs, empty))
    assert np.allclose(w, 1.0 / len(loaded.arrays.memories))


def test_the_centroid_probe_is_the_mean_slot_per_version(loaded: LoadedArtifact) -> None:
    vecs, hists, _ = _users(loaded, 4)
    q = _retriever(loaded, "centroid").queries(vecs, hists)
    np.testing.assert_allclose(q[:, 0], vecs + loaded.arrays.memories.mean(axis=0), rtol=1e-6)


@pytest.mark.parametrize("batch", [1, 7])
def test_the_recommender_answers_as_the_two_padding_path_did(
    loaded: LoadedArtifact, tmp_path: object, batch: int
) -> None:
    """The recommender's top k (items and distances) equal the stages run the old way: the
    retriever padding its own histories, then a second padding for the ranker's feed."""
    a = loaded
    vecs, hists, seen = _users(a, 14)
    rows = np.random.default_rng(3).choice(len(a.arrays.user_ids), 14, replace=False)
    hists = [user_history(a.arrays, int(u))[: a.l_max] for u in rows]  # as the service reads
    store = open_history_store(f"sqlite:///{tmp_path}/h.db", max_len=50)
    retriever, ranker = _retriever(a), Ranker(a.session, a.l_max, a.has_attention)
    rec = Recommender(Tables.from_artifact(a), store, retriever, ranker, 50)
    queries = [Query(str(a.arrays.user_ids.ids[u]), 5) for u in rows]
    got = [r for s in range(0, len(queries), batch)
           for r in rec.recommend_many(queries[s : s + batch])]
    for s in range(0, len(queries), batch):
        sl = slice(s, s + batch)
        cands = retriever.candidates(vecs[sl], hists[sl], seen[sl])
        feed_rows = np.zeros((len(cands), a.l_max), np.int64)
        feed_mask = np.zeros((len(cands), a.l_max), np.float32)
        for b, h in enumerate(hists[sl]):
            feed_rows[b, : len(h)], feed_mask[b, : len(h)] = h, 1.0
        want = ranker.rank(vecs[sl], feed_rows, feed_mask, cands, [5] * len(cands))
        for response, ranked in zip(got[sl], want, strict=True):
            ids = [str(a.arrays.item_ids.ids[r]) for r in ranked.rows]
            assert [i.item_id for i in response.items] == ids
            np.testing.assert_allclose([i.distance for i in response.items], ranked.distances,
                                       rtol=1e-5, atol=1e-6)
    store.close()
