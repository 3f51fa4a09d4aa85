"""The OpenAPI document is the contract: schemathesis fuzzes every operation in-process (its ASGI
transport, lifespan running) with valid and invalid data, and every default check must pass:
no 5xx, documented status codes, content types and headers, responses that match their schemas,
valid data accepted, invalid data rejected, and the declared API keys enforced (schemathesis
re-sends each authorised request without a key and with a wrong one, and expects 401).

Hypothesis is derandomised (a fixed seed per test), so a failure reproduces on every run.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi

from service import deps, middleware
from service.app import create_app
from service.routes import admin, health, interactions, items, model, recommend, users
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
        "PUT /items/{item_id}": [{"AdminKey": []}, {"AdminBearer": []}],
        "DELETE /items/{item_id}": [{"AdminKey": []}, {"AdminBearer": []}],
        "POST /items/{item_id}/restore": [{"AdminKey": []}, {"AdminBearer": []}],
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


# Which kind of key each guard asks for (erasure takes a write or an admin key, and is guarded
# exactly when write keys are configured).
_GUARDS = {
    deps.require_read_key: "read",
    deps.require_write_key: "write",
    deps.require_erase_key: "write",
    deps.require_admin_key: "admin",
}
ROUTERS = (recommend, items, model, interactions, users, health, admin)
_ERROR_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}


def _calls(dependant: Dependant) -> Iterator[Any]:
    yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def _params(dependant: Dependant) -> Iterator[Any]:
    yield from dependant.path_params + dependant.query_params + dependant.body_params
    yield from dependant.header_params + dependant.cookie_params
    for sub in dependant.dependencies:
        yield from _params(sub)


def _expected_errors(route: APIRoute, keys: dict[str, bool]) -> set[int]:
    """The error statuses a route can answer, from what it is rather than from its document:
    its guards and the configured keys (401), its parameters (422), a body or a list
    parameter under a bound (413), admission control or readiness (503), an item id in the
    path (404), a version swap that can be refused or an item that cannot be placed (409);
    500 everywhere (the middleware's last resort)."""
    calls = set(_calls(route.dependant))
    params = list(_params(route.dependant))
    codes = {500}
    if any(keys[_GUARDS[call]] for call in calls if call in _GUARDS):
        codes.add(401)
    if params:
        codes.add(422)
    lists = [p for p in params if typing.get_origin(p.field_info.annotation) is list]
    if route.methods & middleware._BODY_METHODS or lists:
        codes.add(413)
    if route.path_format not in middleware._UNGATED or deps.get_readiness in calls:
        codes.add(503)
    if "item_id" in {p.name for p in route.dependant.path_params}:
        codes.add(404)
    if deps.get_versions in calls and "POST" in route.methods:
        codes.add(409)
    if deps.get_items in calls and "PUT" in route.methods:
        codes.add(409)  # the item is in the version already, or it has no text projection
    return codes


@pytest.mark.parametrize(
    "keys",
    [
        {"read": True, "write": True, "admin": True},
        {"read": True, "write": False, "admin": False},
        {"read": False, "write": True, "admin": False},
        {"read": False, "write": False, "admin": False},
    ],
    ids=["all-keys", "read-key", "write-key", "no-keys"],
)
def test_every_route_documents_each_error_status_it_can_answer_in_the_one_shape(
    tiny_artifact_dir: Path, tmp_path: Path, keys: dict[str, bool]
) -> None:
    settings_ = make_settings(
        tiny_artifact_dir,
        f"sqlite:///{tmp_path / 'h.db'}",
        read_api_keys="r-key" if keys["read"] else "",
        api_keys="w-key" if keys["write"] else "",
        admin_api_keys="a-key" if keys["admin"] else "",
    )
    app = create_app(settings_)
    doc = app.openapi()
    # the kinds guarded in effect (admin falls back to the write keys when it has none)
    guarded = {kind: bool(getattr(app.state.keys, kind)) for kind in keys}
    # the routers' own routes (the app wraps included routers); the count shows none is missed
    routes = [r for module in ROUTERS for r in module.router.routes if isinstance(r, APIRoute)]
    assert len(routes) == sum(len(ops) for ops in doc["paths"].values())
    seen = set()
    for route in routes:
        (method,) = route.methods
        operation = doc["paths"][route.path_format][method.lower()]
        documented = {int(code) for code in operation["responses"] if int(code) >= 400}
        label = f"{method} {route.path_format}"
        assert documented == _expected_errors(route, guarded), label
        for code in documented:
            response = operation["responses"][str(code)]
            assert response["content"] == _ERROR_REF, (label, code)
            assert response["description"], (label, code)
        seen |= documented
    # the derivation is not vacuous: each status occurs on some route of this app
    assert seen >= {404, 409, 413, 422, 500, 503} | ({401} if any(guarded.values()) else set())
