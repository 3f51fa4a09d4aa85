"""Issue 18's per-request savings outside the model change no answer.

- RELREC_FAST_RECOMMEND (service/fast_recommend.py): GET /recommend/{user_id} answered without
  FastAPI's routing, dependency injection and validation when the request is provably valid.
  The same requests — valid ones, which it serves, and every kind of bad one, which it hands
  to the documented route — get the same status, body and headers from an app with it and an
  app without it, over the same artifact and the same history store; its metric says which
  requests it served;
- RELREC_ACCESS_LOG: off, no access line is written, and nothing else changes;
- RELREC_OTEL: FastAPI's native telemetry off (the default) or on, the same answers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.fast_recommend import parse_request
from service.loader import LoadedArtifact
from tests.service.conftest import assert_error, make_settings

ROUTE = "/recommend/{user_id:any}"


@pytest.fixture
def pair(
    tiny_artifact_dir: Path, history_url: str, loaded: LoadedArtifact
) -> Iterator[tuple[TestClient, TestClient]]:
    """(fast path on, fast path off) over one artifact and one history store, in which a new
    user and a trained user have posted history."""
    apps = [
        create_app(make_settings(tiny_artifact_dir, history_url, fast_recommend=on))
        for on in (True, False)
    ]
    with TestClient(apps[0]) as fast, TestClient(apps[1]) as slow:
        items = loaded.arrays.item_ids.to_list()
        trained = str(loaded.arrays.user_ids.ids[2])
        posted = [{"user_id": "new user/1", "item_id": i} for i in items[:4]]
        posted += [{"user_id": trained, "item_id": i} for i in items[5:8]]
        assert fast.post("/interactions", json={"interactions": posted}).status_code < 300
        yield fast, slow


def valid_requests(loaded: LoadedArtifact) -> list[tuple[str, dict[str, Any]]]:
    users = [str(u) for u in loaded.arrays.user_ids.ids[:3]]
    items = loaded.arrays.item_ids.to_list()
    return [
        (f"/recommend/{users[0]}", {}),
        (f"/recommend/{users[1]}", {"k": 5, "offset": 3}),
        (f"/recommend/{users[2]}", {"k": 7, "explain": "true"}),
        (f"/recommend/{users[2]}", {"explain": "0", "k": "1"}),
        (f"/recommend/{users[0]}", {"exclude": items[:3] + ["no-such-item"]}),
        (f"/recommend/{users[1]}", {"candidates": items[10:30] + ["nope"], "k": 4}),
        ("/recommend/new user/1", {"k": 6}),  # posted history only; a "/" in the id
        ("/recommend/never-seen", {"k": 3}),  # cold: popular items
        (f"/recommend/{users[0]}", {"k": 3, "unknown": "ignored"}),
    ]


def bad_requests(loaded: LoadedArtifact) -> list[tuple[str, dict[str, Any]]]:
    """Bad input, and spellings the route may accept but the fast path does not judge."""
    user = str(loaded.arrays.user_ids.ids[0])
    many = [f"x{i}" for i in range(2000)]  # over RELREC_MAX_FILTER_IDS
    return [
        (f"/recommend/{user}", {"k": 0}),
        (f"/recommend/{user}", {"k": -1}),
        (f"/recommend/{user}", {"k": "abc"}),
        (f"/recommend/{user}", {"k": "+3"}),  # the route's to judge: handed over
        (f"/recommend/{user}", {"k": "03"}),
        (f"/recommend/{user}", {"k": 100_000}),  # over RELREC_MAX_K
        (f"/recommend/{user}", {"k": ["2", "3"]}),  # a scalar twice
        (f"/recommend/{user}", {"offset": -1}),
        (f"/recommend/{user}", {"offset": 10_000_000}),
        (f"/recommend/{user}", {"explain": "yes"}),
        (f"/recommend/{user}", {"explain": "maybe"}),
        (f"/recommend/{user}", {"exclude": ""}),
        (f"/recommend/{user}", {"candidates": "bad\x01id"}),
        (f"/recommend/{user}", {"exclude": many}),
        ("/recommend/", {}),
        ("/recommend/u%0A", {}),
        ("/recommend/u%00v", {}),
        ("/recommend/" + "u" * 10_000, {}),
    ]


def _same(a: Any, b: Any) -> None:
    """Same status, body (less the request id of an error) and content headers."""
    assert a.status_code == b.status_code, (a.text, b.text)
    for name in ("content-type", "content-length", "retry-after"):
        assert a.headers.get(name) == b.headers.get(name)
    body_a, body_b = a.json(), b.json()
    if a.status_code >= 400:
        assert_error(a, a.status_code)
        assert_error(b, b.status_code)
        body_a.pop("request_id"), body_b.pop("request_id")
    assert body_a == body_b


def _fast_counts(client: TestClient) -> dict[str, float]:
    """The fast path's non-zero counts by outcome."""
    text = client.get("/metrics").text
    pattern = r'^relrec_fast_recommend_total\{outcome="(\w+)"\} (\S+)$'
    counts = {m.group(1): float(m.group(2)) for m in re.finditer(pattern, text, re.M)}
    return {k: v for k, v in counts.items() if v}


def test_valid_requests_are_served_fast_with_the_routes_answers(
    pair: tuple[TestClient, TestClient], loaded: LoadedArtifact
) -> None:
    fast, slow = pair
    requests = valid_requests(loaded)
    before = _fast_counts(fast)
    for path, params in requests:
        a, b = fast.get(path, params=params), slow.get(path, params=params)
        assert a.status_code == 200, a.text
        _same(a, b)
        assert a.json()["items"]
    after = _fast_counts(fast)
    assert after["served"] - before.get("served", 0) == len(requests)
    assert after.get("delegated", 0) == before.get("delegated", 0)
    assert _fast_counts(slow) == {}  # off: no fast path at all
    # /metrics names the fast path's requests by the route's template, as for the route
    assert f'route="{ROUTE}",status="200"' in fast.get("/metrics").text


def test_requests_it_cannot_prove_valid_get_the_routes_answers(
    pair: tuple[TestClient, TestClient], loaded: LoadedArtifact
) -> None:
    fast, slow = pair
    requests = bad_requests(loaded)
    before = _fast_counts(fast)
    for path, params in requests:
        a, b = fast.get(path, params=params), slow.get(path, params=params)
        assert a.status_code in (200, 413, 422), (path, params, a.text)
        _same(a, b)
    after = _fast_counts(fast)
    assert after["delegated"] - before.get("delegated", 0) == len(requests)
    assert after.get("served", 0) == before.get("served", 0)


def test_other_methods_and_paths_are_untouched(pair: tuple[TestClient, TestClient]) -> None:
    fast, slow = pair
    for method, path in (("HEAD", "/recommend/u1"), ("DELETE", "/recommend/u1"),
                         ("GET", "/recommend"), ("GET", "/recommendations/u1")):
        a, b = fast.request(method, path), slow.request(method, path)
        assert a.status_code == b.status_code and a.status_code >= 400
    assert _fast_counts(fast) == {}  # never even considered


def test_read_keys_are_checked_as_the_route_checks_them(
    tiny_artifact_dir: Path, sqlite_url: str, loaded: LoadedArtifact
) -> None:
    user = str(loaded.arrays.user_ids.ids[1])
    clients = [
        TestClient(
            create_app(
                make_settings(
                    tiny_artifact_dir, sqlite_url, fast_recommend=on, read_api_keys="r1,r2"
                )
            )
        )
        for on in (True, False)
    ]
    with clients[0] as fast, clients[1] as slow:
        for headers in (
            {"X-API-Key": "r2"},
            {"Authorization": "Bearer r1"},
            {"Authorization": "bearer r1"},
            {"X-API-Key": "", "Authorization": "Bearer r2"},
        ):
            a = fast.get(f"/recommend/{user}", headers=headers)
            assert a.status_code == 200, (headers, a.text)
            _same(a, slow.get(f"/recommend/{user}", headers=headers))
        for headers in (
            {},
            {"X-API-Key": "wrong"},
            {"Authorization": "Basic r1"},
            {"Authorization": "Bearer r1x"},
        ):
            a = fast.get(f"/recommend/{user}", headers=headers)
            assert_error(a, 401)
            _same(a, slow.get(f"/recommend/{user}", headers=headers))
        assert _fast_counts(fast) == {"served": 4.0, "delegated": 4.0}


def test_a_server_without_a_version_answers_503_either_way(
    tmp_path: Path, sqlite_url: str
) -> None:
    empty = tmp_path / "no-artifacts"
    empty.mkdir()
    for on in (True, False):
        app = create_app(make_settings(empty, sqlite_url, fast_recommend=on))
        with TestClient(app) as c:
            assert_error(c.get("/recommend/u1"), 503)


@pytest.mark.parametrize(
    ("user_id", "query", "expected"),
    [
        ("u1", b"", ("u1", 10, False, 0, [], None)),
        ("u 1", b"k=3&offset=0&explain=1", ("u 1", 3, True, 0, [], None)),
        ("u", b"exclude=a&exclude=b%2Fc&candidates=d", ("u", 10, False, 0, ["a", "b/c"], ["d"])),
        ("u", b"k=3&x=1&x=2", ("u", 3, False, 0, [], None)),  # unknown names ignored
        ("u", b"k=", None),
        ("u", b"k=1e3", None),
        ("u", b"k=1&k=1", None),
        ("u", b"offset=00", None),
        ("u", b"explain=True", None),
        ("u", b"exclude=a%0A", None),
        ("u\n", b"", None),
        ("", b"", None),
    ],
)
def test_parse_request_accepts_only_the_surely_valid(
    user_id: str, query: bytes, expected: tuple[Any, ...] | None
) -> None:
    assert parse_request(user_id, query) == expected


@pytest.mark.parametrize("on", [True, False])
def test_access_log_setting(
    tiny_artifact_dir: Path, sqlite_url: str, caplog: pytest.LogCaptureFixture, on: bool
) -> None:
    app = create_app(make_settings(tiny_artifact_dir, sqlite_url, access_log=on))
    with TestClient(app) as c, caplog.at_level(logging.INFO, logger="service.access"):
        assert c.get("/recommend/u1", params={"k": 2}).status_code == 200
        assert c.get("/healthz").status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "service.access"]
    if on:
        assert any(line.startswith("GET /recommend/u1 200 ") for line in lines), lines
        assert any(line.startswith("GET /healthz 200 ") for line in lines), lines
    else:
        assert lines == []


def test_fastapi_telemetry_setting_changes_no_answer(
    tiny_artifact_dir: Path, sqlite_url: str, loaded: LoadedArtifact
) -> None:
    """RELREC_OTEL (FastAPI's native telemetry, off by default): the same answers, errors and
    OpenAPI document either way when no OpenTelemetry provider is configured."""
    clients = [
        TestClient(create_app(make_settings(tiny_artifact_dir, sqlite_url, otel=on)))
        for on in (False, True)
    ]
    with clients[0] as off, clients[1] as on:
        for path, params in valid_requests(loaded)[:4] + bad_requests(loaded)[:3]:
            _same(off.get(path, params=params), on.get(path, params=params))
        _same(off.get("/healthz"), on.get("/healthz"))
        assert off.get("/openapi.json").json() == on.get("/openapi.json").json()
