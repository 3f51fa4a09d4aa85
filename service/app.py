"""The FastAPI application: `create_app(settings)` builds it, the lifespan runs the Runtime.

`uvicorn --factory service.app:create_app` or `relrec serve` calls the factory; tests call
`create_app(Settings(artifact_dir=..., history_url="sqlite:///..."))` with no env mutation.
Besides the routers this installs the error handlers (one JSON shape), /metrics, request ids in
every log record, the middleware of `service.middleware` (request ids, admission control,
body bound, timing, the last-resort 500) and, inside it, the fast path of GET /recommend
(`service.fast_recommend`, RELREC_FAST_RECOMMEND).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from models.version import relrec_version
from service.deps import ApiKeys
from service.errors import install_error_handlers
from service.fast_recommend import FastRecommend
from service.metrics import Metrics
from service.middleware import LOG_FORMAT, RequestContextMiddleware, RequestIdFilter
from service.routes import admin, health, interactions, items, model, recommend, users
from service.runtime import Runtime
from service.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["create_app"]

# RELREC_OTEL=false: FastAPI's native telemetry off, so that no request asks the global
# OpenTelemetry providers whether they are configured (service.settings.otel).
_NO_TELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False}
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
        version=relrec_version(),
        lifespan=lifespan,
        telemetry=None if settings.otel else _NO_TELEMETRY,
    )
    app.state.runtime = runtime
    app.state.keys = ApiKeys.from_settings(settings)
    install_error_handlers(app)
    for module in (recommend, items, model, interactions, users, health, admin):
        app.include_router(module.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = FastAPI.openapi(app)
            runtime.limits.document(doc)
            app.openapi_schema = _document_keys(doc, app.state.keys)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if settings.fast_recommend:  # inside the request context, outside FastAPI's handlers
        app.add_middleware(
            FastRecommend,
            runtime=runtime,
            keys=app.state.keys,
            route=recommend.get_route(),
            metrics=metrics,
        )
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        max_in_flight=settings.max_in_flight,
        access_log=settings.access_log,
    )
    if not settings.write_keys():
        log.warning("no RELREC_API_KEYS configured: POST /interactions and /admin are open")
    return app


def _document_keys(doc: dict[str, Any], keys: ApiKeys) -> dict[str, Any]:
    """Write whether API keys are required into the OpenAPI document (the bounds are written by
    `Limits.document`), so that what it calls valid is what the service accepts: an operation
    whose kind of key is not configured loses its security requirement and its 401."""
    # A kind of key that is not configured leaves its endpoints open: the document must not ask
    # for it. Scheme names are service.deps' (ReadKey, ReadBearer, WriteKey, ...).
    kinds = {"Read": keys.read, "Write": keys.write, "Admin": keys.admin}
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
            else:  # open here: no key is asked for, so none is refused
                operation.get("responses", {}).pop("401", None)
    schemes = doc["components"].get("securitySchemes", {})
    for name in set(schemes) - used:
        del schemes[name]
    if not schemes:
        doc["components"].pop("securitySchemes", None)
    return doc


def _configure_logging(level: str) -> None:
    """Request ids on the root handlers; a handler of our own when nobody configured logging."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format=LOG_FORMAT)
    for handler in root.handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
    logging.getLogger("service").setLevel(level.upper())
