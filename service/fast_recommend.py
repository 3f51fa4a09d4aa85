"""GET /recommend/{user_id} without FastAPI's routing, dependency injection and validation.

On this service's hottest route FastAPI's machinery (the router's matching, solving the
dependencies and the security schemes, validating six parameters through pydantic) was a
measurable share of a request's CPU beside the model's own work (docs/benchmarks.md, issue 18).
`FastRecommend` sits between the request-context middleware (request ids, admission control,
metrics, access log: unchanged) and FastAPI's exception handling, and answers a GET
/recommend/{user_id} itself **only when it can prove the request valid**: every parameter in
the one spelling it recognises, the ids within ID_PATTERN, the read key (when keys are
configured) one that matches, the limits passed. It then calls the same `RecommendService`
(`prepare` and `answer`) and renders the same body (`RecommendService.render`) as the route.

Everything else — a parameter it does not parse, bad input, a missing or wrong key, a server
not ready — is handed unchanged to the documented route, which answers it as before (the same
422, 401, 413, 503 bodies). An error while answering (overloaded, the store down) is rendered
by `service.errors.render`, as the route's handler renders it, so the work is not done twice.
So the answers, the error shape and the OpenAPI document are the same with and without it
(`RELREC_FAST_RECOMMEND`), which `tests/service/test_fast_recommend.py` checks request by
request.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.deps import ApiKeys, key_matches, presented_read_key
from service.errors import RelrecError, render
from service.metrics import Metrics
from service.recommend_service import RecommendService
from service.schemas import ID_PATTERN

__all__ = ["PREFIX", "FastRecommend"]

PREFIX = "/recommend/"  # the route is /recommend/{user_id:any}: the rest of the path is the id
# ID_PATTERN as a full match: Python's "$" would also match before a final newline.
_ID = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$"))
_POSITIVE = re.compile(r"[1-9][0-9]{0,8}")  # k: Query(ge=1)
_NATURAL = re.compile(r"0|[1-9][0-9]{0,8}")  # offset: Query(ge=0)
_BOOLS = {"true": True, "false": False, "1": True, "0": False}  # a subset of pydantic's
_LISTS = ("exclude", "candidates")
_KNOWN = {"k", "explain", "offset", *_LISTS}


class FastRecommend:
    """Pure ASGI: serves the provably valid GET /recommend/{user_id}, hands the rest to `app`.

    `runtime` is read per request (its RecommendService is the route's); `route` is the
    documented route, set as `scope["route"]` so that /metrics and the access log name the
    request's template as they do for the route.
    """

    def __init__(
        self, app: ASGIApp, runtime: Any, keys: ApiKeys, route: Any, metrics: Metrics
    ) -> None:
        self.app = app
        self.runtime = runtime  # service.runtime.Runtime (not imported: it imports us)
        self.keys = keys
        self.route = route
        self.served = metrics.fast_recommend.labels("served")
        self.delegated = metrics.fast_recommend.labels("delegated")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or not scope["path"].startswith(PREFIX)
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        service: RecommendService = self.runtime.recommend
        job = await self._prepare(scope, service)
        if job is None:
            self.delegated.inc()
            await self.app(scope, receive, send)
            return
        self.served.inc()
        scope["route"] = self.route
        try:
            rec = await service.answer(job)
        except RelrecError as exc:  # e.g. overloaded or the store down, once computed: rendered
            # as the route's handler renders it, not computed again through the route
            await render(Request(scope), exc)(scope, receive, send)
            return
        await service.render(rec)(scope, receive, send)

    async def _prepare(self, scope: Scope, service: RecommendService) -> Any:
        """(engine, query) when the request is valid in every respect the route checks,
        else None (the route will answer it)."""
        args = parse_request(scope["path"][len(PREFIX) :], scope["query_string"])
        if args is None:
            return None
        if self.keys.read:
            given = await presented_read_key(Request(scope))
            if not key_matches(given, self.keys.read):
                return None
        try:
            return service.prepare(*args)
        except Exception:  # noqa: BLE001 - a limit or readiness error: the route's to answer
            return None


def parse_request(user_id: str, query_string: bytes) -> tuple[Any, ...] | None:
    """The route's arguments (user_id, k, explain, offset, exclude, candidates or None) when
    every one is spelt as the route surely accepts it, else None.

    Query parsing is Starlette's (`QueryParams`, as FastAPI reads it); a scalar given twice, a
    number with a sign or leading zeros, a bool other than true/false/1/0, an id outside
    ID_PATTERN all give None: the route decides those. Unknown parameters are ignored, as the
    route ignores them.
    """
    if not _ID.fullmatch(user_id):
        return None
    scalars: dict[str, str] = {}
    lists: dict[str, list[str]] = {"exclude": [], "candidates": []}
    for name, value in QueryParams(query_string).multi_items():
        if name in lists:
            if not _ID.fullmatch(value):
                return None
            lists[name].append(value)
        elif name in _KNOWN:
            if name in scalars:
                return None
            scalars[name] = value
    k, offset = scalars.get("k", "10"), scalars.get("offset", "0")
    explain = _BOOLS.get(scalars.get("explain", "false"))
    if not _POSITIVE.fullmatch(k) or not _NATURAL.fullmatch(offset) or explain is None:
        return None
    candidates = lists["candidates"] or None
    return user_id, int(k), explain, int(offset), lists["exclude"], candidates
