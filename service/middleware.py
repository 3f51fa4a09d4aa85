"""The one pure-ASGI middleware of the app, and the request id it gives every log record.

`RequestContextMiddleware` gives every request an id (X-Request-ID: the caller's when it is
short and safe to log, else ours; echoed, and in every log record through `RequestIdFilter`),
applies admission control (`max_in_flight`), bounds the body size (413 before the body is
parsed), times requests per route template for /metrics and turns any unhandled exception into
the one JSON error shape with status 500. `service.app` installs it.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import re
import time
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import OverloadedError, PayloadTooLargeError, error_body
from service.metrics import Metrics

log = logging.getLogger("service.app")  # the name its records have always had
access_log = logging.getLogger("service.access")

__all__ = ["LOG_FORMAT", "REQUEST_ID", "RequestContextMiddleware", "RequestIdFilter"]

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_BODY_METHODS = {"POST", "PUT", "PATCH"}
_UNGATED = {"/healthz", "/readyz", "/metrics"}  # probes and scrapes pass admission control


class RequestContextMiddleware:
    """Request id, admission control, body bound, latency metrics and the last-resort 500, for
    every request.

    Admission: at most `max_in_flight` API requests in progress in this worker; the next ones
    get 503 `overloaded` with Retry-After at once, so that overload sheds load quickly instead
    of growing queues (and latency) without bound, while the admitted ones are served.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        max_body_bytes: int,
        max_in_flight: int,
        access_log: bool = True,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log  # RELREC_ACCESS_LOG
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
        # skip escaping the path when not logged
        if self.access_log and access_log.isEnabledFor(logging.INFO):
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


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (the current request's, or "-")."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True
