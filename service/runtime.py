"""Runtime: what one server process serves with, and the atomic swap of model versions.

Holds the history store, the current `Engine` (a loaded artifact with its retriever, ranker
and recommender), the micro-batcher and the watcher of the artifacts' `current` pointer. A
request reads `runtime.engine` once and keeps that engine to its end, so in-flight requests
finish on the version they started on; a reload builds the new engine beside the old one and
replaces one attribute (atomic under the GIL); the old one is freed when its last request is
done. A version that fails to load or verify is refused and the old one keeps serving.
This module and `app.py` are the only ones that see the whole `Settings`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from models import artifact as art
from service.batching import MicroBatcher
from service.errors import ArtifactRejectedError, NotReadyError
from service.foldin import build_fold_in
from service.history import HistoryStore, open_history_store
from service.loader import LoadedArtifact, load_artifact
from service.metrics import Metrics
from service.ranker import Ranker
from service.recommender import Query, Recommendation, Recommender
from service.retriever import Retriever
from service.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["Engine", "ReloadResult", "Runtime"]


@dataclass(frozen=True, eq=False)
class Engine:
    """One model version ready to answer: compared by identity."""

    artifact: LoadedArtifact
    recommender: Recommender

    @property
    def version(self) -> str:
        return self.artifact.version


@dataclass(frozen=True)
class ReloadResult:
    version: str
    previous: str | None
    changed: bool


class Runtime:
    """Lifecycle: `await start()` in the app's lifespan, `await stop()` at shutdown."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store: HistoryStore | None = None
        self._engine: Engine | None = None
        self._artifact_error: str | None = "not loaded yet"
        self._rejected: Path | None = None  # last refused target; the watcher skips it
        self._reload_lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self.draining = False  # set on SIGTERM (service/server.py): /readyz answers 503
        self.batcher: MicroBatcher[tuple[Engine, Query], Recommendation] = MicroBatcher(
            self._run_batch,
            max_size=settings.batch_max_size,
            max_wait_s=settings.batch_max_wait_ms / 1000.0,
            max_in_flight=settings.batch_in_flight,
            on_batch=self.metrics.batch_size.observe,
            executor=settings.batch_executor,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, load the current version if there is one, start batcher and watcher.

        A missing or broken artifact does not stop start-up: /readyz says 503 until one loads.
        """
        s = self.settings
        self.store = open_history_store(
            s.history_url,
            max_len=s.history_max_len,
            idempotency_ttl_s=s.idempotency_ttl_s,
            log_max_len=s.log_max_len,
        )
        self.batcher.start()
        try:
            await self.reload()
        except (ArtifactRejectedError, NotReadyError) as exc:
            log.error("no model version to serve yet: %s", exc.message)
        if s.reload_poll_s > 0:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await self.batcher.aclose()
        if self.store is not None:
            self.store.close()

    # -- serving ------------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The current engine; NotReadyError (503) until a version has loaded."""
        engine = self._engine
        if engine is None:
            raise NotReadyError(f"no model version loaded: {self._artifact_error}")
        return engine

    def history_store(self) -> HistoryStore:
        if self.store is None:
            raise NotReadyError("the history store is not open yet")
        return self.store

    async def recommend(self, user_id: str, k: int, explain: bool) -> Recommendation:
        engine = self.engine  # read once: the request stays on this version to its end
        rec = await self.batcher.submit((engine, Query(user_id, k, explain)))
        self.metrics.recommendations.labels(rec.source).inc()
        return rec

    def _run_batch(self, items: Sequence[tuple[Engine, Query]]) -> list[Recommendation]:
        """One micro-batch; a batch that straddles a swap is split by engine."""
        groups: dict[int, tuple[Engine, list[int]]] = {}
        for i, (engine, _) in enumerate(items):
            groups.setdefault(id(engine), (engine, []))[1].append(i)
        out: list[Recommendation | None] = [None] * len(items)
        for engine, idx in groups.values():
            recs = engine.recommender.recommend_many([items[i][1] for i in idx])
            for i, rec in zip(idx, recs, strict=True):
                out[i] = rec
        return [r for r in out if r is not None]

    # -- versions -----------------------------------------------------------------------------

    async def reload(self, force: bool = False) -> ReloadResult:
        """Load what `current` names beside the serving version and swap if it is new.

        Raises ArtifactRejectedError when the version is broken (the old one keeps serving)
        and NotReadyError when there is no version at all.
        """
        async with self._reload_lock:
            previous = self._engine
            try:
                target = art.resolve_version_dir(self.settings.artifact_dir).resolve()
            except art.ArtifactError as exc:
                if previous is None:
                    self._artifact_error = str(exc)
                    raise NotReadyError(str(exc)) from exc
                raise ArtifactRejectedError(str(exc)) from exc
            if previous is not None and previous.artifact.path == target and not force:
                return ReloadResult(previous.version, previous.version, False)
            try:
                engine = await asyncio.to_thread(self._build_engine, target)
            except ArtifactRejectedError as exc:
                self._rejected = target
                self.metrics.reloads.labels("rejected").inc()
                if previous is None:
                    self._artifact_error = exc.message
                log.error("refused artifact %s: %s", target.name, exc.message)
                raise
            self._engine = engine  # the swap
            self._rejected = None
            self._artifact_error = None
            self.metrics.reloads.labels("loaded").inc()
            if previous is not None:
                self.metrics.model_info.remove(previous.version)
            self.metrics.model_info.labels(engine.version).set(1)
            old = previous.version if previous else None
            log.info("serving model version %s (was %s)", engine.version, old)
            return ReloadResult(engine.version, old, True)

    def _build_engine(self, path: Path) -> Engine:
        s = self.settings
        artifact = load_artifact(
            path,
            ort_threads=s.ort_threads,
            faiss_threads=s.faiss_threads,
            use_gpu=s.use_gpu,
            ef_search=s.ef_search,
            n_candidates=s.n_candidates,
        )
        arrays = artifact.arrays
        retriever = Retriever(
            artifact.index,
            arrays.items,
            arrays.keys,
            arrays.memories,
            artifact.n_candidates,
            probes=s.probes,
        )
        ranker = Ranker(artifact.session, artifact.l_max, artifact.has_attention)
        store = self.history_store()
        recommender = Recommender(
            artifact,
            store,
            retriever,
            ranker,
            s.history_max_len,
            on_stage=self._observe_stage,
            on_store_error=self.metrics.store_errors.labels("recent").inc,
            on_scored=self.metrics.candidates_scored.inc,
            fold_in=build_fold_in(
                artifact.manifest.fold_in,
                arrays,
                margin=float(artifact.manifest.model.get("margin", 0.5)),
                enabled=s.fold_in,
                steps=s.fold_in_steps,
            ),
        )
        return Engine(artifact, recommender)

    def _observe_stage(self, stage: str, seconds: float) -> None:
        self.metrics.stage_seconds.labels(stage).observe(seconds)

    async def _watch(self) -> None:
        """Poll `current`; reload when it names a version that is neither served nor refused."""
        while True:
            await asyncio.sleep(self.settings.reload_poll_s)
            try:
                target = art.resolve_version_dir(self.settings.artifact_dir).resolve()
            except (art.ArtifactError, OSError):
                continue
            engine = self._engine
            if (engine is not None and engine.artifact.path == target) or target == self._rejected:
                continue
            try:
                await self.reload()
            except (ArtifactRejectedError, NotReadyError):
                pass  # logged by reload(); the old version keeps serving
            except Exception:  # noqa: BLE001 - the watcher must outlive any one failure
                log.exception("artifact watcher failed; retrying at the next poll")

    # -- readiness ----------------------------------------------------------------------------

    def begin_drain(self) -> None:
        """The process is shutting down: readiness fails from now on, serving goes on."""
        self.draining = True
        log.info("draining: /readyz answers 503 until the listener closes")

    def artifact_status(self) -> tuple[bool, str | None, str | None]:
        """(ready, detail, version) of the artifact part."""
        engine = self._engine
        if engine is None:
            return False, self._artifact_error, None
        detail = f"refused {self._rejected.name}" if self._rejected is not None else None
        return True, detail, engine.version

    def store_status(self) -> tuple[bool, str | None]:
        """(ready, detail) of the history store; pings it (blocking: call from a thread)."""
        started = time.perf_counter()
        try:
            self.history_store().ping()
        except NotReadyError as exc:
            return False, exc.message
        return True, f"ping {1000 * (time.perf_counter() - started):.1f} ms"
