"""FastAPI dependencies as Annotated aliases (FastAPI template `api/deps.py`).

Routes declare `runtime: RuntimeDep` or `_: WriteKeyDep` and stay thin. API keys are compared
in constant time against every configured key (no early exit that would leak which one
matched) and are never logged; with no key configured the endpoint is open.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.errors import UnauthorizedError
from service.runtime import Runtime

__all__ = ["AdminKeyDep", "RuntimeDep", "WriteKeyDep", "key_matches"]

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="API key for writes and admin, when configured"
)
_bearer = HTTPBearer(auto_error=False, description="the same API key as a bearer token")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def key_matches(given: str | None, allowed: list[str]) -> bool:
    """Constant-time membership: every allowed key is compared, whatever matched first."""
    if given is None:
        return False
    given_b = given.encode()
    ok = False
    for key in allowed:
        ok |= hmac.compare_digest(given_b, key.encode())
    return ok


def _presented(header: str | None, bearer: HTTPAuthorizationCredentials | None) -> str | None:
    if header:
        return header
    return bearer.credentials if bearer is not None else None


def require_write_key(
    runtime: RuntimeDep,
    header: Annotated[str | None, Security(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> None:
    allowed = runtime.settings.write_keys()
    if allowed and not key_matches(_presented(header, bearer), allowed):
        raise UnauthorizedError()


def require_admin_key(
    runtime: RuntimeDep,
    header: Annotated[str | None, Security(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> None:
    allowed = runtime.settings.admin_keys()
    if allowed and not key_matches(_presented(header, bearer), allowed):
        raise UnauthorizedError()


WriteKeyDep = Annotated[None, Depends(require_write_key)]
AdminKeyDep = Annotated[None, Depends(require_admin_key)]
