"""GET /recommend through the real app, the tiny trained HLR and a real SQLite store.

The tiny model is trained on planted data (users of community c like items of block c), so
a good answer is checkable: a user's recommendations come from their own block.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.artifact_arrays import user_history
from service.app import create_app
from service.loader import LoadedArtifact
from tests.service.conftest import assert_error, make_settings


def block(item_id: str) -> str:
    return item_id.split("-")[1][1:]  # "i17-b2" -> "2"


def community(user_id: str) -> str:
    return user_id.split("-")[1][1:]  # "u5-c2" -> "2"


def train_items(loaded: LoadedArtifact, user_id: str) -> set[str]:
    rows = user_history(loaded.arrays, loaded.arrays.user_ids.row(user_id))
    return {str(loaded.arrays.item_ids.ids[r]) for r in rows}


def test_known_user_gets_personal_unseen_items_of_their_block(
    client: TestClient, loaded: LoadedArtifact
) -> None:
    user = str(loaded.arrays.user_ids.ids[3])
    r = client.get(f"/recommend/{user}", params={"k": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] == user and body["source"] == "personalized"
    assert body["model_version"] == loaded.version
    items = [it["item_id"] for it in body["items"]]
    scores = [it["score"] for it in body["items"]]
    assert len(items) == 10 == len(set(items))
    assert scores == sorted(scores, reverse=True)
    assert not set(items) & train_items(loaded, user)  # seen items are excluded
    assert sum(block(i) == community(user) for i in items) >= 3  # chance: about 1
    assert all(it["because"] is None for it in body["items"])


def test_unknown_user_with_posted_history(client: TestClient, loaded: LoadedArtifact) -> None:
    posted = [i for i in loaded.arrays.item_ids.to_list() if block(i) == "2"][:4]
    r = client.post(
        "/interactions",
        json={
            "interactions": [
                {"user_id": "new user/1", "item_id": i, "timestamp": 1_700_000_000 + t}
                for t, i in enumerate(posted)
            ]
        },
    )
    assert r.json() == {"accepted": 4, "duplicates": 0, "rejected": [], "unknown_items": []}
    body = client.get("/recommend/new user%2F1", params={"k": 10}).json()
    assert body["user_id"] == "new user/1" and body["source"] == "history"
    items = [it["item_id"] for it in body["items"]]
    assert len(items) == 10 and not set(items) & set(posted)
    assert sum(block(i) == "2" for i in items) >= 8


def test_user_with_nothing_gets_most_popular(client: TestClient, loaded: LoadedArtifact) -> None:
    body = client.get("/recommend/nobody-at-all", params={"k": 5}).json()
    assert body["source"] == "popular"
    expected = [str(loaded.arrays.item_ids.ids[r]) for r in loaded.popular_rows[:5]]
    assert [it["item_id"] for it in body["items"]] == expected
    # Test issue #22: the raw count moved from `score` to `popularity`; `score` is its share
    pops = [it["popularity"] for it in body["items"]]
    assert pops == sorted(pops, reverse=True) and pops[0] == loaded.arrays.popularity.max()
    n_users = len(loaded.arrays.user_ids)
    assert [it["score"] for it in body["items"]] == [p / n_users for p in pops]
    assert all(it["distance"] is None for it in body["items"])


def test_score_is_one_scale_higher_is_better_with_the_distance_beside_it(
    client: TestClient, loaded: LoadedArtifact
) -> None:
    """Test issue #22: `score` was -distance for model sources and a raw count for `popular`;
    now it is in [0, 1] and higher-is-better for every source, the distance in its own field."""
    posted = [i for i in loaded.arrays.item_ids.to_list() if block(i) == "1"][:3]
    client.post(
        "/interactions",
        json={"interactions": [{"user_id": "folded", "item_id": i} for i in posted]},
    )
    users = (str(loaded.arrays.user_ids.ids[3]), "folded", "nobody")
    bodies = [client.get(f"/recommend/{u}", params={"k": 20}).json() for u in users]
    assert [b["source"] for b in bodies] == ["personalized", "history", "popular"]
    for body in bodies:
        scores = [it["score"] for it in body["items"]]
        assert len(scores) == 20 and scores == sorted(scores, reverse=True)
        assert all(0.0 <= s <= 1.0 for s in scores)
    for body in bodies[:2]:
        dists = [it["distance"] for it in body["items"]]
        assert dists == sorted(dists) and all(d >= 0 for d in dists)  # squared distances
        for it in body["items"]:
            assert it["score"] == pytest.approx(1 / (1 + np.exp(it["distance"])), rel=1e-9)
            row = loaded.arrays.item_ids.row(it["item_id"])
            assert it["popularity"] == loaded.arrays.popularity[row]


def test_post_then_get_excludes_the_item_and_changes_the_list(
    client: TestClient, loaded: LoadedArtifact
) -> None:
    user = str(loaded.arrays.user_ids.ids[10])
    before = [it["item_id"] for it in client.get(f"/recommend/{user}").json()["items"]]
    r = client.post("/interactions", json={"user_id": user, "item_id": before[0]})
    assert r.status_code == 200 and r.json()["accepted"] == 1
    after = [it["item_id"] for it in client.get(f"/recommend/{user}").json()["items"]]
    assert before[0] not in after and after != before
    assert len(after) == 10


def test_explain_lists_the_history_items_that_weighed_most(
    client: TestClient, loaded: LoadedArtifact
) -> None:
    user = str(loaded.arrays.user_ids.ids[0])
    hist = train_items(loaded, user)
    body = client.get(f"/recommend/{user}", params={"k": 5, "explain": "true"}).json()
    for item in body["items"]:
        because = item["because"]
        assert 1 <= len(because) <= 3
        assert {b["item_id"] for b in because} <= hist
        weights = [b["weight"] for b in because]
        assert weights == sorted(weights, reverse=True)
        assert all(0 < w <= 1 for w in weights)
    # the popular fallback has nothing to explain, and says so with an empty list
    body = client.get("/recommend/nobody", params={"explain": "true"}).json()
    assert all(it["because"] == [] for it in body["items"])


def test_k_larger_than_the_unseen_catalogue(client: TestClient, loaded: LoadedArtifact) -> None:
    user = str(loaded.arrays.user_ids.ids[0])
    n_unseen = loaded.n_items - len(train_items(loaded, user))
    body = client.get(f"/recommend/{user}", params={"k": 100}).json()
    assert len(body["items"]) == min(100, n_unseen)


def test_responses_carry_request_ids(client: TestClient) -> None:
    r = client.get("/recommend/nobody", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = client.get("/recommend/nobody", headers={"X-Request-ID": "bad id\twith tab"})
    assert r.headers["x-request-id"] != "bad id\twith tab"
    assert len(r.headers["x-request-id"]) == 32


def test_bad_k_and_ids(client: TestClient) -> None:
    for params in ({"k": 0}, {"k": -1}, {"k": 101}, {"k": "ten"}, {"explain": "maybe"}):
        assert_error(client.get("/recommend/u", params=params), 422, "invalid_input")
    assert_error(client.get("/recommend/" + "x" * 129), 422, "invalid_input")
    assert_error(client.get("/recommend/a%01b"), 422, "invalid_input")


def test_metrics_count_requests_and_stages(client: TestClient, loaded: LoadedArtifact) -> None:
    client.get(f"/recommend/{loaded.arrays.user_ids.ids[0]}")
    text = client.get("/metrics").text
    assert 'relrec_request_seconds_count{method="GET",route="/recommend/{user_id:any}"' in text
    for stage in ("history", "retrieval", "rerank", "serialize"):
        assert f'relrec_stage_seconds_count{{stage="{stage}"}}' in text
    assert 'relrec_stage_seconds_count{stage="serialize"} 1.0' in text  # one per response
    assert f'relrec_worker{{pid="{os.getpid()}"}} 1.0' in text  # TestClient: this process
    assert "process_cpu_seconds_total" in text
    assert 'relrec_model_info{version="' + loaded.version + '"} 1.0' in text
    assert np.isfinite(float(text.split("relrec_batch_size_count ")[1].split()[0]))


def _candidates_scored(client: TestClient) -> float:
    text = client.get("/metrics").text
    return float(text.split("\nrelrec_candidates_scored_total ")[1].split()[0])


def test_candidates_scored_rises_by_the_candidates_re_ranked(
    client: TestClient, loaded: LoadedArtifact
) -> None:
    """Test issue #17: the counter was declared and never incremented."""
    assert _candidates_scored(client) == 0.0
    user = str(loaded.arrays.user_ids.ids[0])
    assert client.get(f"/recommend/{user}", params={"k": 5}).status_code == 200
    after_one = _candidates_scored(client)
    unseen = loaded.arrays.item_ids.ids.shape[0] - len(train_items(loaded, user))
    # Every unseen item up to RELREC_N_CANDIDATES (200) is re-ranked, at least the k answered.
    assert 5 <= after_one <= min(200, unseen)
    assert client.get(f"/recommend/{user}", params={"k": 5}).status_code == 200
    assert _candidates_scored(client) == 2 * after_one  # same user, same candidates
    assert client.get("/recommend/nobody-at-all").json()["source"] == "popular"
    assert _candidates_scored(client) == 2 * after_one  # the fallback re-ranks nothing


def test_post_then_get_on_both_history_stores(
    tiny_artifact_dir: Path, history_url: str, loaded: LoadedArtifact
) -> None:
    """The API path over SQLite and over a real redis-server behaves the same."""
    block2 = [i for i in loaded.arrays.item_ids.to_list() if block(i) == "2"][:3]
    with TestClient(create_app(make_settings(tiny_artifact_dir, history_url))) as c:
        assert c.get("/readyz").status_code == 200
        assert c.get("/recommend/fresh").json()["source"] == "popular"
        batch = [
            {"user_id": "fresh", "item_id": i, "event_id": f"e{n}"} for n, i in enumerate(block2)
        ]
        assert c.post("/interactions", json={"interactions": batch}).json()["accepted"] == 3
        assert c.post("/interactions", json={"interactions": batch}).json()["duplicates"] == 3
        body = c.get("/recommend/fresh", params={"explain": True}).json()
        assert body["source"] == "history"
        items = [it["item_id"] for it in body["items"]]
        assert not set(items) & set(block2)
        assert {b["item_id"] for it in body["items"] for b in it["because"]} <= set(block2)
