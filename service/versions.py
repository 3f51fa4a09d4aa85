"""Versions: which model version serves, its atomic swap, the watcher, and readiness.

`Versions` holds the current `Engine` (a loaded artifact with its recommender). A request reads
`versions.current` once and keeps that engine to its end, so in-flight requests finish on the
version they started on; a reload builds the new engine beside the old one and replaces one
attribute (atomic under the GIL); the old one is freed when its last request is done. A version
that fails to load or verify is refused and the old one keeps serving. The watcher polls the
artifacts' `current` pointer. `Readiness` answers /readyz from the versions, the history store
and the draining flag that SIGTERM sets (service/server.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models import artifact as art
from models.version import relrec_version
from service.errors import ArtifactRejectedError, NotReadyError
from service.history import HistoryStore
from service.loader import LoadedArtifact
from service.metrics import Metrics
from service.recommender import Recommender
from service.schemas import ModelResponse, PartStatus, ReadyResponse, ReloadResponse

log = logging.getLogger(__name__)

__all__ = ["Engine", "Readiness", "Versions"]

STORE_PING_TIMEOUT_S = 2.0


@dataclass(frozen=True, eq=False)
class Engine:
    """One model version ready to answer: compared by identity."""

    artifact: LoadedArtifact
    recommender: Recommender
    # service.item_catalogue.Catalogue: items PUT and hidden through the API (None: none)
    catalogue: Any = None

    @property
    def version(self) -> str:
        return self.artifact.version


class Versions:
    """The serving engine and its swaps; `build(path)` loads one version (blocking)."""

    def __init__(
        self, artifact_dir: Path, build: Callable[[Path], Engine], metrics: Metrics
    ) -> None:
        self.artifact_dir = artifact_dir
        self.build = build
        self.metrics = metrics
        self._engine: Engine | None = None
        self.error: str | None = "not loaded yet"  # why there is no engine
        self.rejected: Path | None = None  # last refused target; the watcher skips it
        self._lock = asyncio.Lock()

    @property
    def current(self) -> Engine:
        """The serving engine; NotReadyError (503) until a version has loaded."""
        engine = self._engine
        if engine is None:
            raise NotReadyError(f"no model version loaded: {self.error}")
        return engine

    @property
    def loaded(self) -> Engine | None:
        return self._engine

    def describe(self) -> ModelResponse:
        """The serving version's manifest, for GET /model; 503 until one has loaded."""
        m = self.current.artifact.manifest
        return ModelResponse(
            version=self.current.version,
            kind=m.kind,
            hyperparameters={k: v for k, v in m.model.items() if k != "kind"},
            counts=m.counts.model_dump(),
            metrics=m.metrics,
            created_at=m.created_at,
            trained_with=m.relrec_version,
            served_by=relrec_version(),
            l_max=m.l_max,
            index=m.index.model_dump(),
            fold_in="hinge" if m.fold_in is None else m.fold_in.method,
            refit=m.training is not None and m.training.refit,
        )

    async def reload(self, force: bool = False) -> ReloadResponse:
        """Load what `current` names beside the serving version and swap if it is new.

        Raises ArtifactRejectedError when the version is broken (the old one keeps serving)
        and NotReadyError when there is no version at all.
        """
        async with self._lock:
            previous = self._engine
            target = self._target(previous)
            if previous is not None and previous.artifact.path == target and not force:
                return ReloadResponse(
                    version=previous.version, previous=previous.version, changed=False
                )
            try:
                engine = await asyncio.to_thread(self.build, target)
            except ArtifactRejectedError as exc:
                self.rejected = target
                self.metrics.reloads.labels("rejected").inc()
                if previous is None:
                    self.error = exc.message
                log.error("refused artifact %s: %s", target.name, exc.message)
                raise
            self._swap(engine, previous)
            old = previous.version if previous else None
            return ReloadResponse(version=engine.version, previous=old, changed=True)

    async def update(self, change: Callable[[Engine], Engine]) -> Engine:
        """Swap in `change(current)`, an engine of the same version with its items changed
        (PUT/DELETE /items). Under the reload lock: a reload reads the store after the change
        was written, or the change applies to the reloaded engine; never lost in between.
        `change` runs in a thread (it may place text and write the store) and may raise."""
        async with self._lock:
            engine = await asyncio.to_thread(change, self.current)
            self._engine = engine
            return engine

    def _target(self, previous: Engine | None) -> Path:
        try:
            return art.resolve_version_dir(self.artifact_dir).resolve()
        except art.ArtifactError as exc:
            if previous is None:
                self.error = str(exc)
                raise NotReadyError(str(exc)) from exc
            raise ArtifactRejectedError(str(exc)) from exc

    def _swap(self, engine: Engine, previous: Engine | None) -> None:
        self._engine = engine  # the swap
        self.rejected = None
        self.error = None
        self.metrics.reloads.labels("loaded").inc()
        if previous is not None:
            self.metrics.model_info.remove(previous.version)
        self.metrics.model_info.labels(engine.version).set(1)
        old = previous.version if previous else None
        log.info("serving model version %s (was %s)", engine.version, old)

    async def watch(self, poll_s: float) -> None:
        """Poll `current`; reload when it names a version that is neither served nor refused."""
        while True:
            await asyncio.sleep(poll_s)
            try:
                target = art.resolve_version_dir(self.artifact_dir).resolve()
            except (art.ArtifactError, OSError):
                continue
            engine = self._engine
            if (engine is not None and engine.artifact.path == target) or target == self.rejected:
                continue
            try:
                await self.reload()
            except (ArtifactRejectedError, NotReadyError):
                pass  # logged by reload(); the old version keeps serving
            except Exception:  # noqa: BLE001 - the watcher must outlive any one failure
                log.exception("artifact watcher failed; retrying at the next poll")


class Readiness:
    """/readyz: ready when a version is loaded and the store takes writes, until draining."""

    def __init__(self, versions: Versions, store: Callable[[], HistoryStore]) -> None:
        self.versions = versions
        self.store = store
        self.draining = False

    def begin_drain(self) -> None:
        """The process is shutting down: readiness fails from now on, serving goes on."""
        self.draining = True
        log.info("draining: /readyz answers 503 until the listener closes")

    async def check(self) -> ReadyResponse:
        """The status of each part; NotReadyError (503) listing them when one is down."""
        if self.draining:
            raise NotReadyError(
                "not ready: shutting down",
                [{"part": "server", "ready": False, "detail": "draining"}],
            )
        parts = {"artifact": self._artifact_status()}
        try:
            parts["store"] = await asyncio.wait_for(
                asyncio.to_thread(self._store_status), STORE_PING_TIMEOUT_S
            )
        except TimeoutError:
            detail = f"no answer within {STORE_PING_TIMEOUT_S:.0f} s"
            parts["store"] = PartStatus(ready=False, detail=detail)
        if not all(p.ready for p in parts.values()):
            down = ", ".join(name for name, p in parts.items() if not p.ready)
            details = [{"part": name, **p.model_dump()} for name, p in parts.items()]
            raise NotReadyError(f"not ready: {down}", details)
        return ReadyResponse(status="ready", parts=parts)

    def _artifact_status(self) -> PartStatus:
        engine = self.versions.loaded
        if engine is None:
            return PartStatus(ready=False, detail=self.versions.error)
        rejected = self.versions.rejected
        detail = f"refused {rejected.name}" if rejected is not None else None
        return PartStatus(ready=True, detail=detail, version=engine.version)

    def _store_status(self) -> PartStatus:
        """Pings the store (blocking: called from a thread)."""
        started = time.perf_counter()
        try:
            self.store().ping()
        except NotReadyError as exc:
            return PartStatus(ready=False, detail=exc.message)
        return PartStatus(
            ready=True, detail=f"ping {1000 * (time.perf_counter() - started):.1f} ms"
        )
