"""RecommendService: what the recommend routes may do, and the micro-batcher behind it.

Checks a request against the `Limits`, pins the serving version (`Versions.current`, read once,
so a request finishes on the version it started on), submits the query to the micro-batcher
(concurrent requests become one `Recommender.recommend_many` call) and counts the answer in
/metrics. The routes hold this object only: no settings, no runtime, no artifact.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from fastapi import Response

from service.batching import Executor, MicroBatcher
from service.limits import Limits
from service.metrics import Metrics
from service.recommender import Query
from service.schemas import (
    RecommendBatchResponse,
    RecommendRequest,
    RecommendResponse,
    SimilarResponse,
)
from service.versions import Engine, Versions

__all__ = ["RecommendService"]


class RecommendService:
    """Recommendations through the micro-batcher; `start()`/`aclose()` run it."""

    def __init__(
        self,
        versions: Versions,
        limits: Limits,
        metrics: Metrics,
        *,
        batch_max_size: int,
        batch_max_wait_s: float,
        batch_in_flight: int,
        executor: Executor,
    ) -> None:
        self.versions = versions
        self.limits = limits
        self.metrics = metrics
        self.batcher: MicroBatcher[tuple[Engine, Query], RecommendResponse] = MicroBatcher(
            self._run_batch,
            max_size=batch_max_size,
            max_wait_s=batch_max_wait_s,
            max_in_flight=batch_in_flight,
            on_batch=metrics.batch_size.observe,
            executor=executor,
        )

    def start(self) -> None:
        self.batcher.start()

    async def aclose(self) -> None:
        await self.batcher.aclose()

    async def recommend(
        self,
        user_id: str,
        k: int,
        explain: bool = False,
        offset: int = 0,
        exclude: Sequence[str] = (),
        candidates: Sequence[str] | None = None,
    ) -> RecommendResponse:
        """Top k for one user (after `offset`, within the filters); 422 or 413 past the
        limits, 503 until a version is loaded."""
        return await self.answer(self.prepare(user_id, k, explain, offset, exclude, candidates))

    def prepare(
        self,
        user_id: str,
        k: int,
        explain: bool = False,
        offset: int = 0,
        exclude: Sequence[str] = (),
        candidates: Sequence[str] | None = None,
    ) -> tuple[Engine, Query]:
        """The checked query and the version to answer it on; raises what `recommend` would
        (422, 413, 503) before anything is computed, so a caller can still choose another path
        (service/fast_recommend.py)."""
        self.limits.check_id("user_id", user_id)
        query = self._query(user_id, k, explain, offset, exclude, candidates)
        return self.versions.current, query  # read once: the request stays on this version

    async def answer(self, job: tuple[Engine, Query]) -> RecommendResponse:
        """The answer to a prepared query, computed in some micro-batch, and counted."""
        rec = await self.batcher.submit(job)
        self.metrics.recommendations.labels(rec.source).inc()
        return rec

    async def recommend_batch(self, request: RecommendRequest) -> RecommendBatchResponse:
        """One result per user, computed as one micro-batch (not queued behind the single
        requests' batcher); 413 above RELREC_MAX_RECOMMEND_USERS users."""
        self.limits.check_users(len(request.users))
        for user_id in request.users:
            self.limits.check_id("users[]", user_id)
        r = request
        queries = [
            self._query(u, r.k, r.explain, r.offset, r.exclude, r.candidates) for u in r.users
        ]
        engine = self.versions.current
        self.metrics.batch_size.observe(len(queries))
        recs = await asyncio.to_thread(engine.recommender.recommend_many, queries)
        for rec in recs:
            self.metrics.recommendations.labels(rec.source).inc()
        return RecommendBatchResponse(results=recs)

    async def similar(self, item_id: str, k: int) -> SimilarResponse:
        """The item's k nearest items; 404 for an unknown item, 422 past the limits."""
        self.limits.check_id("item_id", item_id)
        self.limits.check_k(k)
        engine = self.versions.current
        return await asyncio.to_thread(engine.recommender.similar, item_id, k)

    def _query(
        self,
        user_id: str,
        k: int,
        explain: bool,
        offset: int,
        exclude: Sequence[str],
        candidates: Sequence[str] | None,
    ) -> Query:
        """The request as a `Query`, after every bound on k and the filters is checked."""
        self.limits.check_k(k, offset)
        for name, ids in (("exclude", exclude), ("candidates", candidates or ())):
            self.limits.check_filter(name, len(ids))
            for item_id in ids:
                self.limits.check_id(f"{name}[]", item_id)
        cands = None if candidates is None else tuple(candidates)
        return Query(user_id, k, explain, offset, tuple(exclude), cands)

    def render(self, response: RecommendResponse | RecommendBatchResponse) -> Response:
        """The JSON body, timed as the "serialize" stage of /metrics (FastAPI's own rendering
        would not be); the body is what `response_model` documents."""
        started = time.perf_counter()
        body = response.model_dump_json()
        self.metrics.stage_seconds.labels("serialize").observe(time.perf_counter() - started)
        return Response(body, media_type="application/json")

    def _run_batch(self, items: Sequence[tuple[Engine, Query]]) -> list[RecommendResponse]:
        """One micro-batch; a batch that straddles a swap is split by engine."""
        groups: dict[int, tuple[Engine, list[int]]] = {}
        for i, (engine, _) in enumerate(items):
            groups.setdefault(id(engine), (engine, []))[1].append(i)
        out: list[RecommendResponse | None] = [None] * len(items)
        for engine, idx in groups.values():
            recs = engine.recommender.recommend_many([items[i][1] for i in idx])
            for i, rec in zip(idx, recs, strict=True):
                out[i] = rec
        return [r for r in out if r is not None]
