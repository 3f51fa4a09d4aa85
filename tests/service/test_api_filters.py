"""Filters (`exclude`, `candidates`, `offset`) on GET /recommend and batch POST /recommend,
through the real app, the tiny trained HLR and both history stores (SQLite and a real
redis-server). Test issue #22.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.loader import LoadedArtifact
from tests.service.conftest import assert_error, make_settings

MAX_FILTER = 8
MAX_USERS = 4


@pytest.fixture
def client(tiny_artifact_dir: Path, history_url: str) -> Iterator[TestClient]:
    settings = make_settings(
        tiny_artifact_dir,
        history_url,
        max_k=500,
        max_filter_ids=MAX_FILTER,
        max_recommend_users=MAX_USERS,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def ids(body: dict[str, Any]) -> list[str]:
    return [it["item_id"] for it in body["items"]]


def get(client: TestClient, user: str, **params: Any) -> dict[str, Any]:
    r = client.get(f"/recommend/{user}", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def trained_user(loaded: LoadedArtifact) -> str:
    return str(loaded.arrays.user_ids.ids[3])


def test_exclude_removes_items_and_reports_unknown_ids(
    client: TestClient, loaded: LoadedArtifact
) -> None:
    user = trained_user(loaded)
    full = ids(get(client, user, k=10))
    body = get(client, user, k=10, exclude=[*full[:3], "no-such-item"])
    assert not set(ids(body)) & set(full[:3])
    assert ids(body)[:7] == full[3:]  # the ranking of the rest is unchanged
    assert body["unknown_ids"] == [
        {"filter": "exclude", "item_id": "no-such-item", "code": "unknown_item"}
    ]
    popular = ids(get(client, "nobody", k=5))
    assert ids(get(client, "nobody", k=4, exclude=popular[:1])) == popular[1:]


def test_candidates_rank_only_the_allow_list_exactly(
    client: TestClient, loaded: LoadedArtifact
) -> None:
    user = trained_user(loaded)
    ranking = get(client, user, k=60)
    deep = ids(ranking)
    allow = [deep[40], deep[2], deep[55], deep[17]]  # far down the list, shuffled
    seen = str(loaded.arrays.item_ids.ids[loaded.arrays.history_items[0]])
    body = get(client, user, k=10, candidates=[*allow, "ghost", allow[0], seen])
    assert ids(body) == [deep[2], deep[17], deep[40], deep[55]]  # by distance; seen dropped
    assert body["unknown_ids"] == [
        {"filter": "candidates", "item_id": "ghost", "code": "unknown_item"}
    ]
    by_id = {it["item_id"]: it for it in ranking["items"]}
    for it in body["items"]:
        assert it["distance"] == pytest.approx(by_id[it["item_id"]]["distance"], rel=1e-5)
    # The popular fallback orders an allow-list by popularity.
    popular = ids(get(client, "nobody", k=6))
    assert ids(get(client, "nobody", candidates=popular[::-1])) == popular
    # With `exclude` too, and nothing left: an empty list, not an error.
    assert ids(get(client, user, candidates=allow[:2], exclude=allow[:2])) == []


def test_offset_pages_through_the_ranking(client: TestClient, loaded: LoadedArtifact) -> None:
    for user in (trained_user(loaded), "nobody"):
        full = ids(get(client, user, k=15))
        pages = [ids(get(client, user, k=5, offset=o)) for o in (0, 5, 10)]
        assert pages[0] + pages[1] + pages[2] == full
    # k + offset beyond the catalogue (120 items): an empty page.
    assert ids(get(client, trained_user(loaded), k=500, offset=400)) == []
    assert ids(get(client, "nobody", k=50, offset=400)) == []
    assert len(ids(get(client, "nobody", k=500, offset=100))) == 20


def test_batch_recommend_answers_each_user_as_get_does(
    client: TestClient, loaded: LoadedArtifact
) -> None:
    posted = [str(x) for x in loaded.arrays.item_ids.ids[:3]]
    r = client.post(
        "/interactions",
        json={"interactions": [{"user_id": "fresh", "item_id": i} for i in posted]},
    )
    assert r.json()["accepted"] == 3
    users = [trained_user(loaded), "fresh", "nobody", trained_user(loaded)]
    params = {"k": 7, "offset": 2, "exclude": [posted[0], "ghost"]}
    r = client.post("/recommend", json={"users": users, **params})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["user_id"] for x in results] == users
    assert [x["source"] for x in results] == ["personalized", "history", "popular"] + [
        "personalized"
    ]
    for user, got in zip(users, results, strict=True):
        one = get(client, user, **params)
        assert ids(got) == ids(one) and len(ids(got)) == 7
        assert [it["score"] for it in got["items"]] == pytest.approx(
            [it["score"] for it in one["items"]], rel=1e-5, abs=1e-9
        )
        assert got["unknown_ids"] == [
            {"filter": "exclude", "item_id": "ghost", "code": "unknown_item"}
        ]
    top = ids(get(client, users[0], k=3))
    cand = client.post("/recommend", json={"users": users[:2], "candidates": top + posted[1:]})
    first, second = cand.json()["results"]
    assert ids(first) == top  # the trained user has seen none of `top`
    assert set(ids(second)) == set(top) - set(posted)  # "fresh" has seen what it posted


def test_numeric_ids_are_refused_saying_ids_are_strings(client: TestClient) -> None:
    """Test issue #22: {"user_id": 123} is a 422 that says why, in every body with ids."""
    for path, body in (
        ("/recommend", {"users": [123]}),
        ("/recommend", {"users": ["u"], "exclude": [7]}),
        ("/interactions", {"user_id": 123, "item_id": "i"}),
        ("/interactions", {"interactions": [{"user_id": "u", "item_id": 5}]}),
    ):
        r = client.post(path, json=body)
        message = r.json()["error"]["message"] if r.status_code == 422 else ""
        if path == "/interactions" and "interactions" in body:  # a batch: rejected alone
            message = r.json()["rejected"][0]["message"]
        assert "ids are strings" in message, r.text


def test_bad_filters_and_batches_are_4xx_in_the_one_shape(client: TestClient) -> None:
    many = [f"i{n}" for n in range(MAX_FILTER + 1)]
    assert_error(client.get("/recommend/u", params={"exclude": many}), 413, "payload_too_large")
    assert_error(client.get("/recommend/u", params={"candidates": many}), 413)
    assert_error(client.post("/recommend", json={"users": ["u"], "exclude": many}), 413)
    users = [f"u{n}" for n in range(MAX_USERS + 1)]
    body = assert_error(client.post("/recommend", json={"users": users}), 413)
    assert "RELREC_MAX_RECOMMEND_USERS" in body["error"]["message"]
    assert_error(client.get("/recommend/u", params={"k": 300, "offset": 501}), 422)
    assert_error(client.get("/recommend/u", params={"offset": -1}), 422, "invalid_input")
    assert_error(client.get("/recommend/u", params={"exclude": "a\x01b"}), 422)
    assert_error(client.get("/recommend/u", params={"candidates": "x" * 129}), 422)
    for bad in (
        {"users": []},
        {"users": ["ok", "a\nb"]},
        {"users": ["x" * 129]},
        {"users": [123]},
        {"users": ["u"], "k": 0},
        {"users": ["u"], "k": 400, "offset": 501},
        {"users": ["u"], "exclude": [""]},
        {"users": ["u"], "candidates": ["x" * 129]},
        {"users": ["u"], "surprise": 1},
        {"users": ["u"], "offset": False},  # not a number: lax pydantic read it as 0
        {"users": ["u"], "k": True},
        {"users": ["u"], "k": "5"},
        {"users": ["u"], "k": 2.5},
        {"users": ["u"], "explain": "yes"},
        {"users": ["u"], "explain": 1},
        {"users": "u"},
        [],
    ):
        assert_error(client.post("/recommend", json=bad), 422, "invalid_input")
    # an integral float is an integer to JSON Schema
    assert client.post("/recommend", json={"users": ["u"], "k": 5.0}).status_code == 200


def scored(client: TestClient) -> float:
    """relrec_candidates_scored_total: how many candidates the exact scorer has re-ranked."""
    text = client.get("/metrics").text
    (line,) = [x for x in text.splitlines() if x.startswith("relrec_candidates_scored_total")]
    return float(line.split()[-1])


def test_a_long_allow_list_is_searched_with_an_id_selector_and_ranks_as_exact_scoring(
    tiny_artifact_dir: Path, history_url: str, loaded: LoadedArtifact
) -> None:
    """Test issue #22: `candidates` over RELREC_SELECTOR_MIN_CANDIDATES ids is searched with a
    FAISS id selector and only C of it re-ranked; on the tiny artifact's exact (Flat) index
    the answer is the one of scoring every listed id exactly."""

    def app(selector_min: int) -> TestClient:
        settings = make_settings(
            tiny_artifact_dir,
            history_url,
            max_filter_ids=100,
            n_candidates=20,
            selector_min_candidates=selector_min,
        )
        return TestClient(create_app(settings))

    rng = np.random.default_rng(3)
    catalogue = [str(x) for x in loaded.arrays.item_ids.ids]
    users = [str(u) for u in loaded.arrays.user_ids.ids[:6]] + ["cold/1"]
    allows = [[str(x) for x in rng.choice(catalogue, 60, replace=False)] for _ in users]
    with app(100_000) as exact, app(16) as selector:
        posted = [{"user_id": "cold/1", "item_id": i} for i in catalogue[:3]]
        assert exact.post("/interactions", json={"interactions": posted}).status_code == 200
        for user, allow in zip(users, allows, strict=True):
            want = get(exact, user, k=5, offset=2, candidates=allow)
            got = get(selector, user, k=5, offset=2, candidates=allow)
            assert want["source"] in ("personalized", "history")
            assert ids(got) == ids(want) and len(ids(got)) == 5, user
            assert set(ids(got)) <= set(allow)
            for a, b in zip(got["items"], want["items"], strict=True):
                assert a["distance"] == pytest.approx(b["distance"], rel=1e-5)
        body = {"users": users[:3], "k": 4, "candidates": allows[0]}
        batch = [selector.post("/recommend", json=body), exact.post("/recommend", json=body)]
        assert [[ids(r) for r in b.json()["results"]] for b in batch] == [
            [ids(get(exact, u, k=4, candidates=allows[0])) for u in users[:3]]
        ] * 2
        # the selector path re-ranked C = 20 of each list (7 GETs, 3 users in a batch), the
        # exact path every unseen listed id
        assert scored(selector) == 20 * (len(users) + 3) < scored(exact)
