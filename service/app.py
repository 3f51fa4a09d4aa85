"""The FastAPI application: `create_app(settings)` builds it, the lifespan runs the Runtime.

`uvicorn --factory service.app:create_app` or `relrec serve` calls the factory; tests call
`create_app(Settings(artifact_dir=..., history_url="sqlite:///..."))` with no env mutation.
Besides the routers this installs the error handlers (one JSON shape) and one pure-ASGI
middleware that gives every request an id (X-Request-ID, echoed, and in every log record),
bounds the body size (413 before the body is parsed), times requests per route template for
/metrics and turns any unhandled exception into the same JSON shape with status 500.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import (
    OverloadedError,
    PayloadTooLargeError,
    error_body,
    install_error_handlers,
)
from service.metrics import Metrics
from service.routes import admin, health, interactions, recommend
from service.runtime import Runtime
from service.settings import Settings

log = logging.getLogger(__name__)
access_log = logging.getLogger("service.access")

__all__ = ["LOG_FORMAT", "REQUEST_ID", "create_app"]

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_BODY_METHODS = {"POST", "PUT", "PATCH"}
_UNGATED = {"/healthz", "/readyz", "/metrics"}  # probes and scrapes pass admission control
_VIA = ("Key", "Bearer")  # each kind of key has an X-API-Key and a bearer scheme (service.deps)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app over `settings` (default: read from RELREC_* env vars and .env)."""
    settings = settings if settings is not None else Settings()
    _configure_logging(settings.log_level)
    metrics = Metrics()
    runtime = Runtime(settings, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="relrec",
        summary="Relational metric-learning recommendations (LRML, HLR, HLR++)",
        version=_relrec_version(),
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    for router in (recommend.router, interactions.router, health.router, admin.router):
        app.include_router(router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document_limits(FastAPI.openapi(app), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        max_in_flight=settings.max_in_flight,
    )
    if not settings.write_keys():
        log.warning("no RELREC_API_KEYS configured: POST /interactions and /admin are open")
    return app


def _document_limits(doc: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Write the configured bounds (RELREC_MAX_K, RELREC_MAX_ID_LENGTH, RELREC_MAX_BATCH) and
    whether API keys are required into the OpenAPI document, so that what it calls valid is
    what the service accepts."""
    for param in doc["paths"]["/recommend/{user_id}"]["get"]["parameters"]:
        if param["name"] == "k":
            param["schema"]["maximum"] = settings.max_k
        if param["name"] == "user_id":
            param["schema"]["maxLength"] = settings.max_id_length
    schemas = doc["components"]["schemas"]
    for name in ("user_id", "item_id"):
        schemas["InteractionIn"]["properties"][name]["maxLength"] = settings.max_id_length
    for option in schemas["InteractionIn"]["properties"]["event_id"].get("anyOf", []):
        if option.get("type") == "string":
            option["maxLength"] = settings.max_id_length
    schemas["InteractionsRequest"]["properties"]["interactions"]["maxItems"] = settings.max_batch
    # A kind of key that is not configured leaves its endpoints open: the document must not ask
    # for it. Scheme names are service.deps' (ReadKey, ReadBearer, WriteKey, ...).
    kinds = {
        "Read": settings.read_keys(),
        "Write": settings.write_keys(),
        "Admin": settings.admin_keys(),
    }
    configured = {kind + kind_of: bool(keys) for kind, keys in kinds.items() for kind_of in _VIA}
    used: set[str] = set()
    for operations in doc["paths"].values():
        for operation in operations.values():
            security = [
                req
                for req in operation.pop("security", [])
                if all(configured.get(name, True) for name in req)
            ]
            if security:
                operation["security"] = security
                used.update(name for req in security for name in req)
    schemes = doc["components"].get("securitySchemes", {})
    for name in set(schemes) - used:
        del schemes[name]
    if not schemes:
        doc["components"].pop("securitySchemes", None)
    return doc


class RequestContextMiddleware:
    """Request id, admission control, body bound, latency metrics and the last-resort 500, for
    every request.

    Admission: at most `max_in_flight` API requests in progress in this worker; the next ones
    get 503 `overloaded` with Retry-After at once, so that overload sheds load quickly instead
    of growing queues (and latency) without bound, while the admitted ones are served.
    """

    def __init__(
        self, app: ASGIApp, metrics: Metrics, max_body_bytes: int, max_in_flight: int
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.max_in_flight = max_in_flight
        self.in_flight = 0  # one event loop per worker: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _client_request_id(scope) or _new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        token = REQUEST_ID.set(rid)
        started = time.perf_counter()
        response: dict[str, Any] = {"status": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"], response["started"] = message["status"], True
                MutableHeaders(scope=message).append("X-Request-ID", rid)
            await send(message)

        admitted = False
        try:
            if scope["path"] not in _UNGATED:
                if self.in_flight >= self.max_in_flight:
                    raise OverloadedError(
                        f"over {self.max_in_flight} requests in progress (RELREC_MAX_IN_FLIGHT)"
                    )
                admitted = True
                self.in_flight += 1
                self.metrics.in_flight.inc()
            receive = await self._bounded(scope, receive)
            await self.app(scope, receive, send_with_id)
        except (PayloadTooLargeError, OverloadedError) as exc:
            status = exc.status_code
            await _send_error(send_with_id, status, exc.code, exc.message, rid, exc.headers)
        except Exception:  # noqa: BLE001 - the last resort: log it, answer 500 in our shape
            log.exception("unhandled error in %s %s", scope["method"], _loggable(scope["path"]))
            if not response["started"]:
                await _send_error(send_with_id, 500, "internal", "internal server error", rid)
        finally:
            if admitted:
                self.in_flight -= 1
                self.metrics.in_flight.dec()
            self._record(scope, int(response["status"]), time.perf_counter() - started)
            REQUEST_ID.reset(token)

    async def _bounded(self, scope: Scope, receive: Receive) -> Receive:
        """`receive` unchanged, or one that replays a body read here within the bound.

        A declared Content-Length over the bound is refused before reading; a chunked body is
        read up to the bound + 1 byte, then refused or replayed to the app.
        """
        if scope["method"] not in _BODY_METHODS:
            return receive
        too_big = PayloadTooLargeError(
            f"request body over {self.max_body} bytes (RELREC_MAX_BODY_BYTES)"
        )
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_body:
                raise too_big
            return receive
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return receive
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise too_big
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        self.metrics.request_seconds.labels(scope["method"], template, str(status)).observe(seconds)
        if access_log.isEnabledFor(logging.INFO):  # skip escaping the path when not logged
            path = _loggable(scope["path"])
            access_log.info("%s %s %d %.1fms", scope["method"], path, status, 1000 * seconds)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _loggable(path: str) -> str:
    """The decoded path with control characters escaped: %0A in a URL must not forge a log line."""
    return path if path.isprintable() else path.encode("unicode_escape").decode("ascii")


# Our request ids: 64 random bits per process (renewed in a forked child), then a counter, as
# 32 hex digits like uuid4().hex. Unique without a getrandom syscall per request: uuid4 was 2%
# of py-spy samples of a worker on GET /recommend, os.urandom 2.5% (docs/benchmarks.md, "Serving").
_rid_prefix = os.urandom(8).hex()
_rid_counter = itertools.count()


def _new_request_id() -> str:
    return f"{_rid_prefix}{next(_rid_counter):016x}"


def _renew_request_id_prefix() -> None:
    global _rid_prefix
    _rid_prefix = os.urandom(8).hex()


os.register_at_fork(after_in_child=_renew_request_id_prefix)


def _client_request_id(scope: Scope) -> str | None:
    """The caller's X-Request-ID when it is short and safe to log, else None (we make one)."""
    value = _header(scope, b"x-request-id")
    return value if value is not None and _CLIENT_ID.match(value) else None


async def _send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    rid: str,
    headers: dict[str, str] | None = None,
) -> None:
    body = json.dumps(error_body(code, message, [], rid)).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (the current request's, or "-")."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def _configure_logging(level: str) -> None:
    """Request ids on the root handlers; a handler of our own when nobody configured logging."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format=LOG_FORMAT)
    for handler in root.handlers:
        if not any(isinstance(f, _RequestIdFilter) for f in handler.filters):
            handler.addFilter(_RequestIdFilter())
    logging.getLogger("service").setLevel(level.upper())


def _relrec_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("relrec")
    except metadata.PackageNotFoundError:
        return "0+unknown"
