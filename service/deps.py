"""FastAPI dependencies as Annotated aliases (FastAPI template `api/deps.py`).

Routes declare the capabilities they use (`service: RecommendDep`, `_: WriteKeyDep`), never
the whole Runtime or the Settings, and stay thin. API keys are compared
in constant time against every configured key (no early exit that would leak which one
matched) and are never logged; with no key configured the endpoint is open. Each kind of key
(read, write, admin) has its own named security scheme, so the OpenAPI document says which
kind an operation needs; a key is sent as `X-API-Key: KEY` or `Authorization: Bearer KEY`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.errors import UnauthorizedError
from service.ingest import IngestService
from service.item_catalogue import ItemsService
from service.recommend_service import RecommendService
from service.versions import Readiness, Versions

__all__ = [
    "AdminKeyDep",
    "ApiKeys",
    "EraseKeyDep",
    "IngestDep",
    "ItemsDep",
    "ReadKeyDep",
    "ReadinessDep",
    "RecommendDep",
    "VersionsDep",
    "WriteKeyDep",
    "key_matches",
    "presented_read_key",
]


@dataclass(frozen=True)
class ApiKeys:
    """The keys of each kind, frozen at start-up; an empty kind leaves its endpoints open."""

    read: tuple[str, ...]
    write: tuple[str, ...]
    admin: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: Any) -> ApiKeys:  # service.settings.Settings
        return cls(
            tuple(settings.read_keys()), tuple(settings.write_keys()), tuple(settings.admin_keys())
        )


def _schemes(kind: str, setting: str) -> tuple[APIKeyHeader, HTTPBearer]:
    header = APIKeyHeader(
        name="X-API-Key",
        scheme_name=f"{kind.capitalize()}Key",
        auto_error=False,
        description=f"a {kind} key, one of {setting}",
    )
    bearer = HTTPBearer(
        scheme_name=f"{kind.capitalize()}Bearer",
        auto_error=False,
        description=f"a {kind} key as a bearer token, one of {setting}",
    )
    return header, bearer


_read_header, _read_bearer = _schemes("read", "RELREC_READ_API_KEYS")
_write_header, _write_bearer = _schemes("write", "RELREC_API_KEYS")
_admin_header, _admin_bearer = _schemes(
    "admin", "RELREC_ADMIN_API_KEYS (RELREC_API_KEYS when unset)"
)


# The dependencies are `async def` although they never await: FastAPI runs a plain `def`
# dependency in its thread pool, a thread hand-off per dependency per request (7.8% of the
# py-spy samples of a worker on GET /recommend, docs/benchmarks.md "Serving") for microseconds
# of work. Each hands out one capability of the app's Runtime (service.runtime).
async def get_recommend(request: Request) -> RecommendService:
    service: RecommendService = request.app.state.runtime.recommend
    return service


async def get_ingest(request: Request) -> IngestService:
    service: IngestService = request.app.state.runtime.ingest
    return service


async def get_items(request: Request) -> ItemsService:
    service: ItemsService = request.app.state.runtime.items
    return service


async def get_versions(request: Request) -> Versions:
    versions: Versions = request.app.state.runtime.versions
    return versions


async def get_readiness(request: Request) -> Readiness:
    readiness: Readiness = request.app.state.runtime.readiness
    return readiness


async def get_keys(request: Request) -> ApiKeys:
    keys: ApiKeys = request.app.state.keys
    return keys


RecommendDep = Annotated[RecommendService, Depends(get_recommend)]
IngestDep = Annotated[IngestService, Depends(get_ingest)]
VersionsDep = Annotated[Versions, Depends(get_versions)]
ItemsDep = Annotated[ItemsService, Depends(get_items)]
ReadinessDep = Annotated[Readiness, Depends(get_readiness)]
_KeysDep = Annotated[ApiKeys, Depends(get_keys)]


def key_matches(given: str | None, allowed: tuple[str, ...] | list[str]) -> bool:
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


async def presented_read_key(request: Request) -> str | None:
    """The read key a request presents, read by the same schemes as `require_read_key`
    (service/fast_recommend.py checks it outside FastAPI's dependency injection)."""
    return _presented(await _read_header(request), await _read_bearer(request))


def _require(given: str | None, allowed: tuple[str, ...]) -> None:
    if allowed and not key_matches(given, allowed):
        raise UnauthorizedError()


# Three guards rather than one factory: FastAPI reads the Security(...) schemes from each
# function's own annotations.
async def require_read_key(
    keys: _KeysDep,
    header: Annotated[str | None, Security(_read_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_read_bearer)],
) -> None:
    _require(_presented(header, bearer), keys.read)


async def require_write_key(
    keys: _KeysDep,
    header: Annotated[str | None, Security(_write_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_write_bearer)],
) -> None:
    _require(_presented(header, bearer), keys.write)


async def require_admin_key(
    keys: _KeysDep,
    header: Annotated[str | None, Security(_admin_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_admin_bearer)],
) -> None:
    _require(_presented(header, bearer), keys.admin)


async def require_erase_key(
    keys: _KeysDep,
    header: Annotated[str | None, Security(_write_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_write_bearer)],
) -> None:
    """Erasure is a write that an admin may also do: guarded when write keys are configured
    (open, like every write, when none is), and any write or admin key passes."""
    _require(_presented(header, bearer), keys.write and keys.write + keys.admin)


ReadKeyDep = Annotated[None, Depends(require_read_key)]
EraseKeyDep = Annotated[None, Depends(require_erase_key)]
WriteKeyDep = Annotated[None, Depends(require_write_key)]
AdminKeyDep = Annotated[None, Depends(require_admin_key)]
