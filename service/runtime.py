"""Runtime: assembles what one server process serves with and runs its lifecycle.

Builds the capabilities the routes receive through `service.deps` (a recommend service, an
ingest service, the versions and readiness, the frozen limits) from the `Settings`, opens the
history store at start-up and closes it at shutdown. How one version is built (loader,
retriever, ranker, fold-in, recommender) is `_build_engine`; which version serves, reloads and
readiness are `service.versions`. This module and `app.py` are the only ones that see the
whole `Settings`.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from service.errors import ArtifactRejectedError, NotReadyError
from service.foldin import build_fold_in
from service.history import HistoryStore, open_history_store
from service.ingest import IngestService
from service.item_catalogue import Catalogue, ItemsService, load_catalogue
from service.item_overlay import serving_parts
from service.limits import Limits
from service.loader import LoadedArtifact, load_artifact
from service.metrics import Metrics
from service.ranker import Ranker
from service.recommend_service import RecommendService
from service.recommender import Recommender
from service.retriever import Retriever
from service.retriever_milvus import MilvusIndex, open_index
from service.settings import Settings
from service.user_pools import UserPools
from service.versions import Engine, Readiness, Versions

log = logging.getLogger(__name__)

__all__ = ["Runtime"]


class Runtime:
    """Lifecycle: `await start()` in the app's lifespan, `await stop()` at shutdown."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store: HistoryStore | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.limits = Limits.from_settings(settings)
        self.versions = Versions(settings.artifact_dir, self._build_engine, metrics)
        self.readiness = Readiness(self.versions, self.history_store)
        self.recommend = RecommendService(
            self.versions,
            self.limits,
            metrics,
            batch_max_size=settings.batch_max_size,
            batch_max_wait_s=settings.batch_max_wait_ms / 1000.0,
            batch_in_flight=settings.batch_in_flight,
            executor=settings.batch_executor,
        )
        self.ingest = IngestService(
            self.limits,
            self.history_store,
            lambda: self.versions.current.recommender.tables.item_ids,
            metrics,
        )

        self.items = ItemsService(
            self.versions, self.history_store, self.assemble, self.limits,
            settings.max_item_text_chars,
        )

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
        self.recommend.start()
        try:
            await self.versions.reload()
        except (ArtifactRejectedError, NotReadyError) as exc:
            log.error("no model version to serve yet: %s", exc.message)
        if s.reload_poll_s > 0:
            watch = self.versions.watch(s.reload_poll_s)
            self._watcher = asyncio.get_running_loop().create_task(watch)

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await self.recommend.aclose()
        if self.store is not None:
            self.store.close()

    def history_store(self) -> HistoryStore:
        if self.store is None:
            raise NotReadyError("the history store is not open yet")
        return self.store

    def _build_engine(self, path: Path) -> Engine:
        s = self.settings
        artifact = load_artifact(
            path,
            ort_threads=s.ort_threads,
            faiss_threads=s.faiss_threads,
            use_gpu=s.use_gpu,
            ef_search=s.ef_search,
            n_candidates=s.n_candidates,
            with_index=s.retriever == "faiss",
        )
        catalogue = load_catalogue(artifact, self.history_store(), s.ort_threads)
        return self.assemble(artifact, catalogue)

    def assemble(self, artifact: LoadedArtifact, catalogue: Catalogue) -> Engine:
        """The engine serving `artifact` with the items of `catalogue` (service/item_overlay.py);
        called at load and on every PUT/DELETE /items."""
        s = self.settings
        base = artifact.index if s.retriever == "faiss" else self._milvus_index(artifact)
        parts = serving_parts(artifact, base, catalogue.ids, catalogue.vectors,
                              catalogue.hidden, catalogue.vector_session)
        arrays = parts.arrays
        retriever = Retriever(
            parts.index,
            arrays.items,
            arrays.keys,
            arrays.memories,
            artifact.n_candidates,
            probes=s.probes,
            selector_min=s.selector_min_candidates,
            pools=_pools(artifact, parts.arrays, s.user_pools),
            on_pool=self._observe_pools,
        )
        recommender = Recommender(
            parts.tables,
            self.history_store(),
            retriever,
            Ranker(parts.session, artifact.l_max, artifact.has_attention),
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
        return Engine(artifact, recommender, catalogue)

    def _milvus_index(self, artifact: LoadedArtifact) -> MilvusIndex:
        """The version's Milvus collection (issue 21): a new one per version, swapped with
        the engine, so a reload switches collections as atomically as it switches files."""
        s = self.settings
        return open_index(s.milvus_uri, s.milvus_token.get_secret_value(), artifact.version,
                          artifact.dim, artifact.n_items, artifact.manifest.index.metric,
                          artifact.ef_search, prefix=s.milvus_collection_prefix)

    def _observe_pools(self, served: int, searched: int) -> None:
        if served:
            self.metrics.pool_lookups.labels("served").inc(served)
        if searched:
            self.metrics.pool_lookups.labels("searched").inc(searched)

    def _observe_stage(self, stage: str, seconds: float) -> None:
        self.metrics.stage_seconds.labels(stage).observe(seconds)


def _pools(artifact: LoadedArtifact, arrays: Any, enabled: bool) -> UserPools | None:
    """The version's candidate pools, unless disabled or items were placed (PUT /items): a
    placed item is in no pool, so the pools' bound would not cover it."""
    if not enabled or arrays.items is not artifact.arrays.items:
        return None
    return artifact.pools
