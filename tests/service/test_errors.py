"""One JSON error shape for every error, and never a 500 for bad input.

Hand-picked bad requests, a property-based fuzz of paths, queries and bodies (hypothesis), the
not-ready and store-down states (503 with Retry-After), and an unhandled exception (500 in the
same shape, no internals).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import create_app
from tests.service.conftest import assert_error, make_settings


@pytest.fixture(scope="module")
def shared_client(
    tiny_artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('errors') / 'h.db'}"
    with TestClient(create_app(make_settings(tiny_artifact_dir, url))) as c:
        yield c


BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    # method, path, httpx kwargs, status, code
    ("GET", "/nowhere", {}, 404, "not_found"),
    ("DELETE", "/recommend/u", {}, 405, "method_not_allowed"),
    ("GET", "/recommend/", {}, 422, "invalid_input"),
    ("GET", "/recommend/u?k=abc", {}, 422, "invalid_input"),
    ("GET", "/recommend/u?k=1e3", {}, 422, "invalid_input"),
    ("GET", "/recommend/u?k=99999999999999999999999", {}, 422, "invalid_input"),
    ("GET", "/recommend/%00", {}, 422, "invalid_input"),
    ("POST", "/interactions", {"content": b"not json"}, 422, "invalid_input"),
    ("POST", "/interactions", {"content": b"\xff\xfe\x00"}, 422, "invalid_input"),
    ("POST", "/interactions", {"json": []}, 422, "invalid_input"),
    ("POST", "/interactions", {"json": None}, 422, "invalid_input"),
    ("POST", "/interactions", {"json": "text"}, 422, "invalid_input"),
    ("POST", "/interactions", {"json": {}}, 422, "invalid_input"),
    ("POST", "/interactions", {"json": {"user_id": 1, "item_id": 2}}, 422, "invalid_input"),
    ("POST", "/interactions", {"json": {"user_id": "u"}}, 422, "invalid_input"),
    ("POST", "/interactions", {"json": {"interactions": "x"}}, 422, "invalid_input"),
    ("POST", "/interactions", {"json": {"interactions": [], "x": 1}}, 422, "invalid_input"),
    (
        "POST",
        "/interactions",
        {"json": {"user_id": "u", "item_id": "i", "weight": 1e308 * 10}},
        422,
        "invalid_input",
    ),
    (
        "POST",
        "/interactions",
        {
            "content": b'{"user_id":"u","item_id":"i","weight":NaN}',
            "headers": {"content-type": "application/json"},
        },
        422,
        "invalid_input",
    ),
    (
        "POST",
        "/interactions",
        {"json": {"user_id": "u", "item_id": "i", "timestamp": "yesterday"}},
        422,
        "invalid_input",
    ),
    ("POST", "/interactions", {"json": {"user_id": "u\n", "item_id": "i"}}, 422, "invalid_input"),
    (
        "POST",
        "/interactions",
        {"headers": {"content-length": "abc"}, "content": b"{}"},
        413,
        "payload_too_large",
    ),
    ("POST", "/admin/reload?force=perhaps", {}, 422, "invalid_input"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code"), BAD_REQUESTS)
def test_bad_requests_get_4xx_in_the_one_shape(
    shared_client: TestClient,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    if "json" in kwargs:  # httpx refuses to encode inf; send the bytes it would have sent
        kwargs = {
            "content": json.dumps(kwargs["json"]).encode(),
            "headers": {"content-type": "application/json"},
        }
    assert_error(shared_client.request(method, path, **kwargs), status, code)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["user_id", "item_id", "timestamp", "weight", "event_id", "interactions", "x"]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=json_values)
def test_fuzzed_bodies_never_500(shared_client: TestClient, body: Any) -> None:
    r = shared_client.post(
        "/interactions",
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    if r.status_code != 200:
        assert_error(r, r.status_code)
        assert 400 <= r.status_code < 500


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user=st.text(min_size=1, max_size=200), k=st.text(max_size=8), explain=st.text(max_size=6))
def test_fuzzed_recommend_queries_never_500(
    shared_client: TestClient, user: str, k: str, explain: str
) -> None:
    r = shared_client.get(f"/recommend/{quote(user, safe='')}", params={"k": k, "explain": explain})
    if r.status_code != 200:
        assert_error(r, r.status_code)
        assert 400 <= r.status_code < 500


def test_not_ready_without_an_artifact(tmp_path: Path, sqlite_url: str) -> None:
    with TestClient(create_app(make_settings(tmp_path / "empty", sqlite_url))) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        r = c.get("/readyz")
        body = assert_error(r, 503, "not_ready")
        assert r.headers["retry-after"].isdigit()
        parts = {p["part"]: p for p in body["error"]["details"]}
        assert (
            parts["artifact"]["ready"] is False and "does not exist" in parts["artifact"]["detail"]
        )
        assert parts["store"]["ready"] is True
        r = c.get("/recommend/u")
        assert_error(r, 503, "not_ready")
        assert "retry-after" in r.headers
        assert_error(c.post("/interactions", json={"user_id": "u", "item_id": "i"}), 503)
        assert_error(c.post("/admin/reload"), 503, "not_ready")


def test_store_down_is_503_and_readyz_says_which_part(tiny_artifact_dir: Path) -> None:
    settings_ = make_settings(tiny_artifact_dir, "redis://127.0.0.1:1/0")
    with TestClient(create_app(settings_)) as c:
        body = assert_error(c.get("/readyz"), 503, "not_ready")
        parts = {p["part"]: p["ready"] for p in body["error"]["details"]}
        assert parts == {"artifact": True, "store": False}
        # reads degrade to the artifact alone (tests/service/test_degraded.py); writes are 503
        item = c.get("/recommend/nobody")
        assert item.status_code == 200 and item.json()["source"] == "training_only"
        known = c.get("/recommend/u1-c1").json()["items"][0]["item_id"]
        r = c.post("/interactions", json={"user_id": "u", "item_id": known})
        assert_error(r, 503, "store_unavailable")
        assert "retry-after" in r.headers
        assert 'relrec_store_errors_total{op="recent"}' in c.get("/metrics").text


def test_unhandled_exception_is_500_in_the_shape_without_internals(
    tiny_artifact_dir: Path, sqlite_url: str
) -> None:
    app = create_app(make_settings(tiny_artifact_dir, sqlite_url))
    with TestClient(app) as c:

        def boom(*args: object, **kwargs: object) -> None:
            raise RuntimeError("secret internals at 0xdeadbeef")

        app.state.runtime.versions.current.recommender.recommend_many = boom
        r = c.get("/recommend/u")
        body = assert_error(r, 500, "internal")
        assert "secret" not in r.text and "deadbeef" not in r.text
        assert body["error"]["message"] == "internal server error"
        assert c.get("/healthz").status_code == 200  # and the server lives on
