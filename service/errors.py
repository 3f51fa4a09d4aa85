"""Errors at the API boundary: one hierarchy, one JSON shape, one handler.

The core (`recommender.py`, `history.py`, `loader.py`, `runtime.py`) raises these; routes stay thin
and never build a `JSONResponse`. Each class names its HTTP status and machine-readable `code`
(KServe `errors.py`), and `install_error_handlers` maps them, FastAPI's own 422 and Starlette's
404/405 to the single shape

    {"error": {"code": ..., "message": ..., "details": [...]}, "request_id": ...}

so that a client parses exactly one error format (gorse `rest.go`: errors mapped in one place).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.schemas import ErrorResponse

log = logging.getLogger(__name__)

__all__ = [
    "ArtifactRejectedError",
    "InvalidInputError",
    "ItemExistsError",
    "NoTextModelError",
    "NotFoundError",
    "NotReadyError",
    "OverloadedError",
    "PayloadTooLargeError",
    "RelrecError",
    "StoreUnavailableError",
    "UnauthorizedError",
    "UnknownItemError",
    "error_body",
    "error_responses",
    "install_error_handlers",
    "validation_message",
]


class RelrecError(Exception):
    """Base of every error the service answers with; status and code live on the class."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(
        self,
        message: str,
        details: Sequence[Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: list[Any] = list(details or [])
        self.headers: dict[str, str] = dict(headers or {})


class InvalidInputError(RelrecError):
    """The request is well-formed JSON but a value is out of bounds or of the wrong kind."""

    status_code = 422
    code = "invalid_input"


class UnknownItemError(RelrecError):
    """An item id is not in the model version that is serving."""

    status_code = 404
    code = "unknown_item"


class NotFoundError(RelrecError):
    """No route matches the path (Starlette's 404, rendered in our shape)."""

    status_code = 404
    code = "not_found"


class MethodNotAllowedError(RelrecError):
    status_code = 405
    code = "method_not_allowed"


class PayloadTooLargeError(RelrecError):
    """The body, or the number of interactions in it, exceeds the configured bound."""

    status_code = 413
    code = "payload_too_large"


class UnauthorizedError(RelrecError):
    """A write or admin endpoint was called without a valid API key."""

    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str = "a valid API key is required") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "ApiKey"})


class ArtifactRejectedError(RelrecError):
    """A new artifact version failed to load or verify; the previous version keeps serving."""

    status_code = 409
    code = "artifact_rejected"


class ItemExistsError(RelrecError):
    """PUT /items of an id the serving version was trained or exported with: it has a vector
    already; DELETE hides it, a new export replaces it."""

    status_code = 409
    code = "item_exists"


class NoTextModelError(RelrecError):
    """PUT /items on a version trained without item text: its artifact has no text projection
    (`manifest.text_model`), so no vector can be placed from text."""

    status_code = 409
    code = "no_text_projection"


class NotReadyError(RelrecError):
    """A part the request needs (artifact, history store) is not up yet: retry later."""

    status_code = 503
    code = "not_ready"
    retry_after_s: ClassVar[int] = 5

    def __init__(self, message: str, details: Sequence[Any] | None = None) -> None:
        super().__init__(message, details, headers={"Retry-After": str(self.retry_after_s)})


class StoreUnavailableError(NotReadyError):
    """The history store cannot be reached or refused the operation."""

    code = "store_unavailable"


class OverloadedError(NotReadyError):
    """More requests in progress than the worker admits (RELREC_MAX_IN_FLIGHT): retry soon."""

    code = "overloaded"
    retry_after_s = 1


_HTTP_CODES: dict[int, str] = {
    404: NotFoundError.code,
    405: MethodNotAllowedError.code,
    413: PayloadTooLargeError.code,
    401: UnauthorizedError.code,
}


# What each error status means on any route; a route may say more of its own (404, 503 of
# /readyz). 500 is on every route: the middleware's last resort answers in the same shape.
_MEANINGS: dict[int, str] = {
    401: "no valid API key (X-API-Key or Authorization: Bearer); only when keys of the "
    "operation's kind are configured",
    404: "an id in the path is not in the serving model version",
    409: "a conflict with the serving state: a version refused (the serving one stays), or "
    "an item that cannot be placed (already in the version, or no text projection)",
    413: "over a size bound: the body (RELREC_MAX_BODY_BYTES) or a list in the request",
    422: "a value of the wrong kind or out of bounds (ids are strings)",
    503: "not ready, the history store unavailable, or overloaded: retry after Retry-After s",
    500: "an unexpected failure (a bug), logged with the request id",
}


def error_responses(*codes: int, **notes: str) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: each status it can answer, in the one error shape.

    `notes` (`s404="..."`) replaces a status' generic meaning with the route's own. 500 is
    always added. tests/service/test_openapi.py derives from each route's parameters, keys
    and middleware which statuses it can return, and checks this list against that.
    """
    return {
        code: {
            "model": ErrorResponse,
            "description": notes.get(f"s{code}", _MEANINGS[code]),
        }
        for code in sorted({*codes, 500})
    }


def error_body(
    code: str, message: str, details: Sequence[Any], request_id: str | None
) -> dict[str, Any]:
    """The one error shape; also used by the middleware for 413 and unhandled errors."""
    return {
        "error": {"code": code, "message": message, "details": list(details)},
        "request_id": request_id,
    }


def _request_id(request: Request) -> str | None:
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else None


def render(request: Request, exc: RelrecError) -> JSONResponse:
    """Render a RelrecError in the one shape; 5xx are logged, 4xx are the client's business."""
    if exc.status_code >= 500:
        log.warning("%s %s: %s", exc.status_code, exc.code, exc.message)
    return JSONResponse(
        error_body(exc.code, exc.message, exc.details, _request_id(request)),
        status_code=exc.status_code,
        headers=exc.headers or None,
    )


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # pydantic's "input" and "ctx" may echo secrets or non-JSON values: keep loc, msg, type only.
    return [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]


_ID_FIELDS = {"user_id", "item_id", "event_id", "users", "exclude", "candidates"}


def validation_message(loc: Sequence[Any], msg: str, kind: str) -> str:
    """`where: what` for a validation error; a JSON number where an id goes is told that ids
    are strings (the API does not turn 123 into "123": issue 22)."""
    where = ".".join(str(p) for p in loc)
    names = {str(p) for p in loc}
    if kind == "string_type" and names & _ID_FIELDS:
        msg = 'ids are strings: send "123", not 123'
    return f"{where}: {msg}" if where else msg


async def _relrec_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RelrecError)
    return render(request, exc)


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = _validation_details(exc)
    first = details[0] if details else {"loc": [], "msg": "invalid request", "type": ""}
    message = validation_message(first["loc"], str(first["msg"]), str(first["type"]))
    return render(request, InvalidInputError(message, details))


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # FastAPI could not decode the body (e.g. not UTF-8): bad input
        return render(request, InvalidInputError(f"body: {exc.detail}"))
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = str(exc.detail)
    if exc.status_code in (404, 405):
        message = f"{message}: {request.method} {request.url.path}"
    body = error_body(code, message, [], _request_id(request))
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through `render`; unhandled exceptions are caught by the middleware."""
    app.add_exception_handler(RelrecError, _relrec_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
