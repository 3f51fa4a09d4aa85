"""The OpenAPI document is the contract: schemathesis fuzzes every operation on a live server
(uvicorn in a thread, real HTTP) and checks no 5xx, documented status codes and content types,
and responses that match their schemas."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings

from service.app import create_app
from tests.service.conftest import make_settings

KEY = "openapi-test-key"


@pytest.fixture(scope="module")
def live_url(tiny_artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = f"sqlite:///{tmp_path_factory.mktemp('openapi') / 'h.db'}"
    app = create_app(make_settings(tiny_artifact_dir, url, api_keys=KEY))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def api_schema(live_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live_url}/openapi.json")


# schemathesis' own pytest integration (`from_fixture`) does not run on pytest 9, so each
# operation's strategy is driven by hypothesis here.
def test_every_operation_conforms_to_the_openapi_document(
    api_schema: schemathesis.BaseSchema, live_url: str
) -> None:
    # .ok() raises if an operation failed to parse: that is a failure of the document too
    operations = [result.ok() for result in api_schema.get_all_operations()]  # type: ignore[union-attr]
    assert {op.label for op in operations} >= {
        "GET /recommend/{user_id}",
        "POST /interactions",
        "GET /readyz",
        "POST /admin/reload",
    }
    for op in operations:

        @given(case=op.as_strategy())
        @settings(
            max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=live_url, headers={"X-API-Key": KEY})

        check()
