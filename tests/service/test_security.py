"""API keys: who may read, write and administer, and that a key never leaks.

The policy (docs/security.md): each kind of endpoint (read: GET /recommend; write:
POST /interactions; admin: /admin/*) is open until keys of its kind are configured, then needs
one of them; a key opens only the kind it is listed for (admin falls back to the write keys when
no admin key is set); probes, metrics and the OpenAPI document never need a key.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.app import create_app
from service.history import open_history_store
from service.loader import LoadedArtifact
from service.settings import Settings
from tests.service.conftest import assert_error, make_settings

READ, WRITE, ADMIN = "r-0123456789abcdef", "w-0123456789abcdef", "a-0123456789abcdef"
ALL_KEYS = {"read_api_keys": READ, "api_keys": WRITE, "admin_api_keys": ADMIN}


@pytest.fixture
def item(loaded: LoadedArtifact) -> str:
    return str(loaded.arrays.item_ids.to_list()[0])


@pytest.fixture
def guarded(tiny_artifact_dir: Path, sqlite_url: str) -> Iterator[TestClient]:
    """Every kind of key configured."""
    with TestClient(create_app(make_settings(tiny_artifact_dir, sqlite_url, **ALL_KEYS))) as c:
        yield c


def key(value: str) -> dict[str, str]:
    return {"X-API-Key": value}


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def calls(item: str) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """One request of each kind: method, path, httpx kwargs."""
    return {
        "read": ("GET", "/recommend/u", {}),
        "write": ("POST", "/interactions", {"json": {"user_id": "u", "item_id": item}}),
        "admin": ("POST", "/admin/reload", {}),
    }


def send(c: TestClient, call: tuple[str, str, dict[str, Any]], headers: dict[str, str]) -> Any:
    method, path, kwargs = call
    return c.request(method, path, headers=headers, **kwargs)


def assert_unauthorized(r: Any) -> None:
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "ApiKey"


def test_every_guarded_endpoint_needs_its_key_when_keys_are_configured(
    guarded: TestClient, item: str
) -> None:
    own = {"read": READ, "write": WRITE, "admin": ADMIN}
    for kind, call in calls(item).items():
        assert_unauthorized(send(guarded, call, {}))
        assert_unauthorized(send(guarded, call, key(own[kind] + "x")))
        assert send(guarded, call, key(own[kind])).status_code == 200, kind
        assert send(guarded, call, bearer(own[kind])).status_code == 200, kind


def test_a_key_of_one_kind_does_not_open_another(guarded: TestClient, item: str) -> None:
    own = {"read": READ, "write": WRITE, "admin": ADMIN}
    for kind, call in calls(item).items():
        for other_kind, other in own.items():
            if other_kind != kind:
                assert_unauthorized(send(guarded, call, key(other)))
                assert_unauthorized(send(guarded, call, bearer(other)))


def test_only_the_exact_key_opens(guarded: TestClient) -> None:
    near_misses = [
        READ[:-1],
        READ + "0",
        READ.upper(),
        " " + READ,
        f"{READ},{READ}",
        "",
        "Bearer " + READ,
    ]
    for wrong in near_misses:
        assert_unauthorized(guarded.get("/recommend/u", headers=key(wrong)))
    assert_unauthorized(guarded.get("/recommend/u", headers={"Authorization": f"Basic {READ}"}))
    # bytes that are not ASCII (arrive as latin-1) are a wrong key, not a server error
    assert_unauthorized(guarded.get("/recommend/u", headers={"X-API-Key": b"\xff\xfe" * 8}))
    # a key in the query string is not a key
    assert_unauthorized(guarded.get("/recommend/u", params={"api_key": READ, "X-API-Key": READ}))


def test_a_rejected_write_stores_nothing(guarded: TestClient, sqlite_url: str, item: str) -> None:
    one = {"user_id": "u", "item_id": item}
    for headers in ({}, key(READ), key(ADMIN), key(WRITE[:-1])):
        assert_unauthorized(guarded.post("/interactions", json=one, headers=headers))
    batch = {"interactions": [one, one]}
    assert_unauthorized(guarded.post("/interactions", json=batch, headers=key(READ)))
    store = open_history_store(sqlite_url, max_len=5)
    assert store.read_log(None, 100) == [] and store.recent("u", 5) == []
    store.close()


def test_probes_metrics_and_the_document_need_no_key(guarded: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert guarded.get(path).status_code == 200, path


def test_each_kind_is_open_until_its_keys_are_configured(
    tiny_artifact_dir: Path, sqlite_url: str, item: str
) -> None:
    read, write, admin = calls(item).values()
    # only read keys: reads need one, writes and admin are open
    settings = make_settings(tiny_artifact_dir, sqlite_url, read_api_keys=READ)
    with TestClient(create_app(settings)) as c:
        assert_unauthorized(send(c, read, {}))
        assert send(c, write, {}).status_code == 200
        assert send(c, admin, {}).status_code == 200
    # only write keys: admin falls back to them; reads stay open
    settings = make_settings(tiny_artifact_dir, sqlite_url, api_keys=WRITE)
    with TestClient(create_app(settings)) as c:
        assert send(c, read, {}).status_code == 200
        assert send(c, read, key("anything")).status_code == 200  # open means open
        assert_unauthorized(send(c, write, {}))
        assert_unauthorized(send(c, admin, {}))
        assert send(c, admin, key(WRITE)).status_code == 200


def test_several_keys_of_a_kind_are_all_accepted_so_keys_can_rotate(
    tiny_artifact_dir: Path, sqlite_url: str, item: str
) -> None:
    old, new = "old-key-0123456789", "new-key-0123456789"
    during = {"read_api_keys": f"{old},{new}", "api_keys": f"{old}, {new}"}
    with TestClient(create_app(make_settings(tiny_artifact_dir, sqlite_url, **during))) as c:
        for call in list(calls(item).values())[:2]:
            assert send(c, call, key(old)).status_code == 200
            assert send(c, call, bearer(new)).status_code == 200
    after = {"read_api_keys": new, "api_keys": new}
    with TestClient(create_app(make_settings(tiny_artifact_dir, sqlite_url, **after))) as c:
        for call in list(calls(item).values())[:2]:
            assert_unauthorized(send(c, call, key(old)))
            assert send(c, call, key(new)).status_code == 200


def test_openapi_declares_only_the_key_schemes_in_force(
    tiny_artifact_dir: Path, sqlite_url: str
) -> None:
    def security(**keys: str) -> tuple[dict[str, Any], set[str]]:
        settings = make_settings(tiny_artifact_dir, sqlite_url, **keys)
        with TestClient(create_app(settings)) as c:
            doc = c.get("/openapi.json").json()
        ops = {
            f"{m.upper()} {p}": op.get("security")
            for p, methods in doc["paths"].items()
            for m, op in methods.items()
        }
        return ops, set(doc["components"].get("securitySchemes", {}))

    ops, schemes = security()
    assert not any(ops.values()) and schemes == set()
    ops, schemes = security(read_api_keys=READ)
    assert ops["GET /recommend/{user_id}"] == [{"ReadKey": []}, {"ReadBearer": []}]
    assert ops["POST /interactions"] is None and ops["POST /admin/reload"] is None
    assert schemes == {"ReadKey", "ReadBearer"}
    ops, schemes = security(**ALL_KEYS)
    assert ops["POST /interactions"] == [{"WriteKey": []}, {"WriteBearer": []}]
    assert ops["POST /admin/reload"] == [{"AdminKey": []}, {"AdminBearer": []}]
    assert ops["GET /healthz"] is None and ops["GET /readyz"] is None
    assert len(schemes) == 6


def _secrets_in(text: str) -> list[str]:
    return [s for s in (READ, WRITE, ADMIN, "0123456789abcdef") if s in text]


def test_keys_never_appear_in_logs_or_error_bodies(
    guarded: TestClient, item: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the root included
    for name in ("service", "service.access", "uvicorn", "uvicorn.access", "uvicorn.error"):
        caplog.set_level(logging.DEBUG, logger=name)
    bodies: list[str] = []
    for call in calls(item).values():
        for headers in (key(READ), key(WRITE + "x"), bearer(ADMIN[:-1]), key(WRITE), bearer(ADMIN)):
            r = send(guarded, call, headers)
            bodies.append(r.text + str(dict(r.headers)))
    r = guarded.get(f"/recommend/u?api_key={READ}", headers={"X-Request-ID": "rid-1"})
    bodies.append(r.text + str(dict(r.headers)))
    bad = {"user_id": "u\n", "item_id": item, "event_id": READ}  # a 422 does not echo input
    r = guarded.post("/interactions", json=bad, headers=key(WRITE))
    assert_error(r, 422, "invalid_input")
    bodies.append(r.text)
    assert any(rec.name == "service.access" for rec in caplog.records)  # the logs were captured
    assert _secrets_in("\n".join(bodies)) == []
    # every record but the test client's own (httpx logs the URLs it requests, query included)
    server = [rec for rec in caplog.records if not rec.name.startswith(("httpx", "httpcore"))]
    assert _secrets_in("\n".join(f"{rec.getMessage()} {rec.args}" for rec in server)) == []
    assert _secrets_in("\n".join(str(rec.exc_text or "") for rec in server)) == []


def test_keys_never_appear_in_the_server_output_at_debug(
    tiny_artifact_dir: Path, tmp_path: Path, start_api: Any, item: str
) -> None:
    """The real server (`serve()`, uvicorn and its logging as deployed) at DEBUG."""
    api = start_api(
        artifact_dir=tiny_artifact_dir,
        history_url=f"sqlite:///{tmp_path / 'h.db'}",
        log_level="DEBUG",
        **ALL_KEYS,
    )
    with httpx.Client(base_url=api.url, timeout=30) as http:
        for headers in (key(READ), key(READ + "x"), bearer(WRITE), key(ADMIN[:-1])):
            http.get("/recommend/u", headers=headers)
            http.post("/interactions", json={"user_id": "u", "item_id": item}, headers=headers)
            http.post("/admin/reload", headers=headers)
        r = http.get("/recommend/u", params={"api_key": READ})
        assert r.status_code == 401 and _secrets_in(r.text) == []
        assert http.get("/recommend/u", headers=key(READ)).status_code == 200
    api.kill()
    output = api.log_path.read_text(errors="replace")
    assert "/recommend/u 401" in output and "/recommend/u 200" in output  # access lines present
    assert _secrets_in(output) == []


def test_bad_key_settings_fail_at_start_without_echoing_secrets() -> None:
    for field, value in [
        ("api_keys", "good-key,has space"),
        ("read_api_keys", "caf\u00e9-0123456789abcdef"),
        ("admin_api_keys", "x" * 600),
    ]:
        with pytest.raises(ValidationError) as info:
            Settings(_env_file=None, **{field: value})  # type: ignore[call-arg, arg-type]
        assert field in str(info.value)
        assert "has space" not in str(info.value) and "0123456789" not in str(info.value)
        assert "x" * 20 not in str(info.value)
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None, history_url="http://:s3cret-pw@redis:6379/0")  # type: ignore[call-arg]
    assert "s3cret" not in str(info.value)
