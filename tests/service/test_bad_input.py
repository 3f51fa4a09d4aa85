"""Bad input never gets in: every malformed request is a 4xx in the one error shape (never a
500), and a rejected request stores nothing, on both history backends (SQLite and a real
redis-server).

Each test holds one promise and walks its hand-picked cases; the schemathesis run in
test_openapi.py covers what hand-picking misses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.history import open_history_store
from service.loader import LoadedArtifact
from service.schemas import ID_MAX
from tests.service.conftest import assert_error, make_settings

MAX_ID = 32
MAX_BATCH = 5
MAX_BODY = 4096
MAX_K = 50

# Ids no client may store: control characters (C0, C1, DEL), line and paragraph separators,
# U+FFFD (what a non-UTF-8 byte in a URL decodes to), empty, and too long.
ODD_IDS = [
    "\x00",
    "u\x00v",
    "u\n",
    "\r\nX-Forged: 1",
    "\t",
    "\x1b[31mred",
    "u\x7f",
    "u\x85",
    "u\x9b",
    "a\u2028b",
    "a\u2029b",
    "\ufffd",
    "u\ufffd",
    "",
    "x" * (MAX_ID + 1),
    "x" * (ID_MAX + 1),
    "x" * 60_000,  # as long as a client library will send in a URL
]
# Bytes of a path segment that are not UTF-8 once percent-decoded (lone bytes, an overlong
# encoding, a UTF-8 encoded surrogate).
NON_UTF8_PATH_SEGMENTS = ["%FF", "u%C3%28", "%C0%AF", "%ED%A0%80", "%80", "ok%FE%FF"]


@pytest.fixture
def client(tiny_artifact_dir: Path, history_url: str) -> Iterator[TestClient]:
    """The app over a fresh store of each backend, with small bounds to reach them cheaply."""
    settings = make_settings(
        tiny_artifact_dir,
        history_url,
        max_id_length=MAX_ID,
        max_batch=MAX_BATCH,
        max_body_bytes=MAX_BODY,
        max_k=MAX_K,
    )
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def item(loaded: LoadedArtifact) -> str:
    return str(loaded.arrays.item_ids.to_list()[0])


def stored(history_url: str, users: list[str] | None = None) -> list[Any]:
    """Everything the store holds: the durable log and, for `users`, their histories."""
    store = open_history_store(history_url, max_len=50)
    try:
        log = [e.event for e in store.read_log(None, 10_000)]
        histories = [h for h in store.recent_many(users or [], 50) if h]
        return log + histories
    finally:
        store.close()


def post_raw(client: TestClient, body: bytes, **headers: str) -> Any:
    return client.post(
        "/interactions", content=body, headers={"content-type": "application/json", **headers}
    )


def post_json(client: TestClient, body: Any) -> Any:
    # json.dumps writes NaN/Infinity and lone surrogates as Python's json module reads them
    return post_raw(client, json.dumps(body).encode())


def test_oversized_bodies_are_413_and_store_nothing(
    client: TestClient, history_url: str, item: str
) -> None:
    pad = "p" * MAX_BODY
    big = json.dumps({"user_id": "u", "item_id": item, "event_id": pad}).encode()
    assert_error(post_raw(client, big), 413, "payload_too_large")

    def chunked() -> Iterator[bytes]:  # no Content-Length: the bound applies while reading
        yield b'{"user_id": "u", "item_id": "' + item.encode() + b'", "event_id": "'
        for _ in range(MAX_BODY // 64 + 1):
            yield b"e" * 64
        yield b'"}'

    r = client.post(
        "/interactions", content=chunked(), headers={"content-type": "application/json"}
    )
    assert_error(r, 413, "payload_too_large")
    batch = {"interactions": [{"user_id": f"u{i}", "item_id": item} for i in range(200)]}
    assert_error(post_json(client, batch), 413, "payload_too_large")
    for length in ("abc", "-1", str(MAX_BODY + 1), "1" * 40):
        r = post_raw(client, b"{}", **{"content-length": length})
        assert_error(r, 413, "payload_too_large")
    assert stored(history_url, ["u", "u0"]) == []


def test_too_many_events_are_413_and_store_nothing(
    client: TestClient, history_url: str, item: str
) -> None:
    users = [f"u{i}" for i in range(MAX_BATCH + 1)]
    batch = [{"user_id": u, "item_id": item} for u in users]
    body = assert_error(post_json(client, {"interactions": batch}), 413, "payload_too_large")
    assert str(MAX_BATCH) in body["error"]["message"]
    assert stored(history_url, users) == []
    # the bound itself is accepted, whole
    r = post_json(client, {"interactions": batch[:MAX_BATCH]})
    assert r.status_code == 200 and r.json()["accepted"] == MAX_BATCH


def test_huge_or_non_integer_k_is_422(client: TestClient) -> None:
    for k in ["0", "-1", str(MAX_K + 1), str(10**30), str(2**63), "1e3", "1.5", "NaN", "inf"]:
        r = client.get("/recommend/u", params={"k": k})
        assert_error(r, 422, "invalid_input")
    for k in ["true", "false", "", "0x10", "５"]:  # booleans and look-alikes are not numbers
        r = client.get("/recommend/u", params={"k": k})
        assert_error(r, 422, "invalid_input")
    assert client.get("/recommend/u", params={"k": MAX_K}).status_code == 200


@pytest.mark.parametrize("field", ["user_id", "item_id", "event_id"])
def test_odd_ids_in_the_body_are_422_and_store_nothing(
    client: TestClient, history_url: str, item: str, field: str
) -> None:
    for odd in ODD_IDS:
        one = {"user_id": "u", "item_id": item, field: odd}
        r = post_json(client, one)
        assert 400 <= r.status_code < 500, (odd[:40], r.text)
        assert_error(r, r.status_code)
        assert r.status_code in (413, 422), odd[:40]  # 100k characters exceed the body bound
    assert stored(history_url, ["u"]) == []


def test_odd_ids_in_a_batch_are_rejected_alone(
    client: TestClient, history_url: str, item: str
) -> None:
    odd = [i for i in ODD_IDS if len(i) <= MAX_ID + 1]
    for start in range(0, len(odd), MAX_BATCH - 1):
        chunk = odd[start : start + MAX_BATCH - 1]
        batch = [{"user_id": o, "item_id": item} for o in chunk]
        batch.append({"user_id": "good", "item_id": item})
        r = post_json(client, {"interactions": batch})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [x["index"] for x in body["rejected"]] == list(range(len(chunk)))
        assert {x["code"] for x in body["rejected"]} == {"invalid_input"}
    log = stored(history_url)
    assert {(e.user_id, e.item_id) for e in log} == {("good", item)}


def test_odd_user_ids_in_the_path_are_422(client: TestClient) -> None:
    for odd in ODD_IDS:
        if not odd:
            continue  # /recommend/ is its own case below
        r = client.get("/recommend/" + quote(odd, safe=""))
        assert_error(r, 422, "invalid_input")
    assert_error(client.get("/recommend/"), 422, "invalid_input")


def test_non_utf8_bytes_in_the_path_are_422(client: TestClient) -> None:
    for segment in NON_UTF8_PATH_SEGMENTS:
        assert_error(client.get(f"/recommend/{segment}"), 422, "invalid_input")


def test_non_utf8_bytes_in_the_body_are_422_and_store_nothing(
    client: TestClient, history_url: str, item: str
) -> None:
    i = item.encode()
    bodies = [
        b"\xff",
        b"\xfe\xff\x00{",
        b'{"user_id": "\xff", "item_id": "' + i + b'"}',
        b'{"user_id": "u\xc3\x28", "item_id": "' + i + b'"}',
        b'{"user_id": "\xed\xa0\x80", "item_id": "' + i + b'"}',  # a surrogate, UTF-8 encoded
        b'{"user_id": "\\udc80", "item_id": "' + i + b'"}',  # a lone surrogate, JSON escaped
        b'{"user_id": "u", "item_id": "' + i + b'", "event_id": "\\ud800"}',
        b'{"interactions": [{"user_id": "\xff", "item_id": "' + i + b'"}]}',
    ]
    for body in bodies:
        assert_error(post_raw(client, body), 422, "invalid_input")
    assert stored(history_url, ["u"]) == []


def test_lone_surrogates_in_a_batch_are_rejected_alone(
    client: TestClient, history_url: str, item: str
) -> None:
    batch = (
        b'{"interactions": ['
        b'{"user_id": "\\udc80", "item_id": "' + item.encode() + b'"},'
        b'{"user_id": "u", "item_id": "\\ud800x"},'
        b'{"user_id": "ok", "item_id": "' + item.encode() + b'"}]}'
    )
    r = post_raw(client, batch)
    assert r.status_code == 200, r.text
    assert [x["index"] for x in r.json()["rejected"]] == [0, 1]
    assert [(e.user_id, e.item_id) for e in stored(history_url)] == [("ok", item)]


def test_nan_and_infinite_weights_are_422_and_store_nothing(
    client: TestClient, history_url: str, item: str
) -> None:
    prefix = b'{"user_id": "u", "item_id": "' + item.encode() + b'", "weight": '
    for weight in [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1e7"]:
        assert_error(post_raw(client, prefix + weight + b"}"), 422, "invalid_input")
        batch = b'{"interactions": [' + prefix + weight + b"}]}"
        r = post_raw(client, batch)
        assert r.status_code == 200 and r.json()["accepted"] == 0, r.text
        assert [x["code"] for x in r.json()["rejected"]] == ["invalid_input"]
    assert stored(history_url, ["u"]) == []


def test_zero_and_negative_weights_are_422_and_store_nothing(
    client: TestClient, history_url: str, item: str
) -> None:
    """Test issue 16: a weight must be a finite number > 0, single or in a batch."""
    for weight in [0, 0.0, -0.0, -1, -4.5, -1e-300]:
        one = {"user_id": "u", "item_id": item, "weight": weight}
        body = assert_error(post_json(client, one), 422, "invalid_input")
        assert "weight" in body["error"]["message"]
        ok = {"user_id": "u2", "item_id": item, "weight": 0.5}
        r = post_json(client, {"interactions": [one, ok]})
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 1
        assert [(x["index"], x["code"]) for x in r.json()["rejected"]] == [(0, "invalid_input")]
        assert "weight" in r.json()["rejected"][0]["message"]
    log = stored(history_url)
    assert {(e.user_id, e.weight) for e in log} == {("u2", 0.5)}


def test_booleans_and_strings_for_numbers_are_422_and_store_nothing(
    client: TestClient, history_url: str, item: str
) -> None:
    wrong = [
        {"weight": True},
        {"weight": False},
        {"weight": "4.5"},
        {"weight": [1]},
        {"timestamp": True},
        {"timestamp": False},
        {"timestamp": [1]},
    ]
    for extra in wrong:
        one = {"user_id": "u", "item_id": item, **extra}
        assert_error(post_json(client, one), 422, "invalid_input")
        r = post_json(client, {"interactions": [one]})
        assert r.status_code == 200 and r.json()["accepted"] == 0, (extra, r.text)
    assert_error(client.get("/recommend/u", params={"k": "true"}), 422, "invalid_input")
    assert stored(history_url, ["u"]) == []
    # integers are numbers: weight 2 is stored as 2.0
    assert post_json(client, {"user_id": "u", "item_id": item, "weight": 2}).status_code == 200
    assert [e.weight for e in stored(history_url)] == [2.0]
