"""The OpenAPI document is the contract: schemathesis fuzzes every operation in-process (its ASGI
transport, lifespan running) with valid and invalid data, and every default check must pass:
no 5xx, documented status codes, content types and headers, responses that match their schemas,
valid data accepted, invalid data rejected, and the declared API keys enforced (schemathesis
re-sends each authorised request without a key and with a wrong one, and expects 401).

Hypothesis is derandomised (a fixed seed per test), so a failure reproduces on every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi

from service.app import create_app
from tests.service.conftest import make_settings

KEYS = {"Read": "read-key-for-fuzzing", "Write": "write-key-for-fuzzing", "Admin": "admin-key-fz"}
EXAMPLES = 200
# The default checks, configured in one respect: 413 (a body or batch over its bound) counts as
# rejecting invalid data, beside schemathesis' default 4xx list.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": "400 401 403 404 405 406 409 413 415 422 428 429 5xx".split()
            }
        }
    }
)


@pytest.fixture(scope="module")
def api_schema(
    tiny_artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[schemathesis.BaseSchema]:
    url = f"sqlite:///{tmp_path_factory.mktemp('openapi') / 'h.db'}"
    settings_ = make_settings(
        tiny_artifact_dir,
        url,
        read_api_keys=KEYS["Read"],
        api_keys=KEYS["Write"],
        admin_api_keys=KEYS["Admin"],
    )
    app = create_app(settings_)
    # Loading starts the app's lifespan in schemathesis' event loop; it is stopped below.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
    try:
        yield schema
    finally:
        asgi.shutdown_lifespans()


def _key_headers(operation: Any) -> dict[str, str]:
    """The key of the kind the operation declares (ReadKey -> the read key), else none."""
    names = {name for req in operation.definition.raw.get("security", []) for name in req}
    kinds = {name.removesuffix("Key") for name in names if name.endswith("Key")}
    assert len(kinds) <= 1, names
    return {"X-API-Key": KEYS[kinds.pop()]} if kinds else {}


def test_openapi_document_declares_the_key_schemes_on_guarded_operations(
    api_schema: schemathesis.BaseSchema,
) -> None:
    raw = api_schema.raw_schema
    schemes = raw["components"]["securitySchemes"]
    for kind in KEYS:
        assert schemes[f"{kind}Key"] == {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": schemes[f"{kind}Key"]["description"],
        }
        assert schemes[f"{kind}Bearer"]["scheme"] == "bearer"
    security = {
        f"{method.upper()} {path}": op.get("security")
        for path, ops in raw["paths"].items()
        for method, op in ops.items()
    }
    assert security == {
        "GET /recommend/{user_id}": [{"ReadKey": []}, {"ReadBearer": []}],
        "POST /recommend": [{"ReadKey": []}, {"ReadBearer": []}],
        "GET /items/{item_id}/similar": [{"ReadKey": []}, {"ReadBearer": []}],
        "GET /model": [{"ReadKey": []}, {"ReadBearer": []}],
        "POST /interactions": [{"WriteKey": []}, {"WriteBearer": []}],
        "DELETE /users/{user_id}": [{"WriteKey": []}, {"WriteBearer": []}],
        "POST /admin/reload": [{"AdminKey": []}, {"AdminBearer": []}],
        "GET /healthz": None,
        "GET /readyz": None,
    }


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_passes_every_default_schemathesis_check(
    api_schema: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    # .ok() raises if an operation failed to parse: that is a failure of the document too
    operations = [result.ok() for result in api_schema.get_all_operations()]  # type: ignore[union-attr]
    assert {op.label for op in operations} >= {
        "GET /recommend/{user_id}",
        "POST /recommend",
        "GET /items/{item_id}/similar",
        "POST /interactions",
        "GET /readyz",
        "POST /admin/reload",
    }
    for op in operations:
        raw = op.definition.raw
        if mode is GenerationMode.NEGATIVE and not (
            raw.get("parameters") or raw.get("requestBody")
        ):
            continue  # nothing to make invalid (GET /healthz, GET /readyz)
        _fuzz(op, mode)


def _fuzz(op: Any, mode: GenerationMode) -> None:
    headers = _key_headers(op)

    # schemathesis' own pytest integration (`from_fixture`) does not run on pytest 9, so each
    # operation's strategy is driven by hypothesis here.
    @given(case=op.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, timeout=30)

    check()
