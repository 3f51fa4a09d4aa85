"""Item catalogue: items placed from their text and items hidden, live, without retraining.

Stage: PUT/DELETE /items/{id} (issue 20) and version loading. A `Catalogue` is what one
engine serves beyond its artifact: the items PUT (ids and vectors placed by the version's text
model, `service/text_placer.py`) and the ids hidden. It is immutable: a change builds a new
catalogue and a new engine around the same loaded artifact (`service/item_overlay.py` wires
it into retrieval, scoring and the tables), swapped in under the versions' lock
(`Versions.update`), so in-flight requests finish on the engine they started on and a reload
never races a change. The history store keeps the texts and the hidden ids
(`HistoryStore.put_item`/`hide_item`), so every version loaded (a restart, a reload) places the
items PUT that its artifact lacks again with its own text model, and keeps hiding what was
hidden; an item an export includes is served from the artifact from then on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.errors import (
    ArtifactRejectedError,
    InvalidInputError,
    ItemExistsError,
    NoTextModelError,
    StoreUnavailableError,
    UnknownItemError,
)
from service.history import HistoryStore, ItemRecords
from service.limits import Limits
from service.loader import LoadedArtifact
from service.schemas import ItemResponse
from service.text_placer import TextPlacer
from service.versions import Engine, Versions

log = logging.getLogger(__name__)

__all__ = ["Catalogue", "ItemsService", "load_catalogue"]

PLACE_BATCH = 64  # texts per encoder call when a version re-places the items PUT before


@dataclass(frozen=True, eq=False)
class Catalogue:
    """Items served beyond an artifact's table: PUT (rows V + i, in `ids` order) and hidden."""

    placer: TextPlacer | None  # None: the version has no text model; PUT answers 409
    vector_session: Any = None  # scorer_vectors.onnx's session, with the placer
    ids: tuple[str, ...] = ()
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    hidden: frozenset[str] = frozenset()

    def with_item(self, item_id: str, vector: np.ndarray) -> Catalogue:
        """This catalogue with `item_id` placed at `vector` (replaced if PUT before)."""
        keep = [i for i, x in enumerate(self.ids) if x != item_id]
        rest = self._rows(keep) if keep else np.zeros((0, len(vector)), np.float32)
        vectors = np.concatenate([rest, vector[None, :].astype(np.float32)])
        return Catalogue(self.placer, self.vector_session,
                         (*(self.ids[i] for i in keep), item_id), vectors,
                         self.hidden - {item_id})

    def without_item(self, item_id: str) -> Catalogue:
        """This catalogue with `item_id` hidden (and no longer placed, if PUT)."""
        keep = [i for i, x in enumerate(self.ids) if x != item_id]
        return Catalogue(self.placer, self.vector_session, tuple(self.ids[i] for i in keep),
                         self._rows(keep), self.hidden | {item_id})

    def restored(self, item_id: str) -> Catalogue:
        """This catalogue with `item_id` no longer hidden."""
        return dataclasses.replace(self, hidden=self.hidden - {item_id})

    def _rows(self, keep: list[int]) -> np.ndarray:
        if not len(self.ids):
            dim = self.vectors.shape[1] if self.vectors.ndim == 2 else 0
            return np.zeros((0, dim), np.float32)
        return self.vectors[keep]


def load_catalogue(artifact: LoadedArtifact, store: HistoryStore, threads: int = 0
                   ) -> Catalogue:
    """The catalogue of a version being loaded: its text model, the items PUT that its
    artifact lacks placed by it, and the hidden ids. A store that cannot be read leaves the
    version serving its artifact alone (logged), as recommendations do without the store."""
    info = artifact.manifest.text_model
    placer, vector_session = None, None
    if info is not None:
        placer = TextPlacer.load(artifact.path, info, threads)
        vector_session = _session(artifact.path / info.scorer, threads)
    try:
        records = store.item_records()
    except StoreUnavailableError as exc:
        log.error("version %s serves without the items PUT or hidden through the API: %s",
                  artifact.version, exc.message)
        records = ItemRecords({}, frozenset())
    known = artifact.arrays.item_ids
    texts = {i: t for i, t in records.texts.items() if i not in known}
    catalogue = Catalogue(placer, vector_session, hidden=records.hidden)
    if texts and placer is None:
        log.warning("version %s has no text projection: %d items PUT before are not served "
                    "by it", artifact.version, len(texts))
        return catalogue
    ids = list(texts)
    vectors = [placer.place([texts[i] for i in ids[s:s + PLACE_BATCH]])
               for s in range(0, len(ids), PLACE_BATCH)] if placer is not None else []
    if ids:
        log.info("version %s: %d items PUT through the API placed from their text",
                 artifact.version, len(ids))
        return Catalogue(placer, vector_session, tuple(ids), np.concatenate(vectors),
                         records.hidden)
    return catalogue


class ItemsService:
    """PUT and DELETE /items/{id}: validate, keep in the store, swap in the changed engine."""

    def __init__(self, versions: Versions, store: Callable[[], HistoryStore],
                 assemble: Callable[[LoadedArtifact, Catalogue], Engine],
                 limits: Limits, max_text_chars: int) -> None:
        self.versions = versions
        self.limits = limits
        self.store = store
        self.assemble = assemble
        self.max_text_chars = max_text_chars

    async def put(self, item_id: str, text: str) -> tuple[ItemResponse, bool]:
        """Place `item_id` from `text` and serve it from the next request on; returns the
        response and whether the item is new (False: its text was replaced)."""
        self.limits.check_id("item_id", item_id)
        text = self._checked(text)
        created = True

        def change(engine: Engine) -> Engine:
            nonlocal created
            catalogue: Catalogue = engine.catalogue or Catalogue(None)
            if item_id in engine.artifact.arrays.item_ids:
                raise ItemExistsError(
                    f"item {item_id!r} is in model version {engine.version} already: its "
                    f"vector comes from the export; DELETE hides it")
            if catalogue.placer is None:
                raise NoTextModelError(
                    f"model version {engine.version} has no text projection (trained without "
                    f"item text): items cannot be placed from their text; train with "
                    f"--item-text and export")
            created = item_id not in catalogue.ids
            vector = catalogue.placer.place([text])[0]  # [d]
            self.store().put_item(item_id, text)
            return self.assemble(engine.artifact, catalogue.with_item(item_id, vector))

        engine = await self.versions.update(change)
        return ItemResponse(item_id=item_id, model_version=engine.version, hidden=False), created

    async def delete(self, item_id: str) -> ItemResponse:
        """Hide `item_id` from every list; 404 when the serving version does not know it."""
        self.limits.check_id("item_id", item_id)

        def change(engine: Engine) -> Engine:
            catalogue: Catalogue = engine.catalogue or Catalogue(None)
            if item_id not in engine.artifact.arrays.item_ids and item_id not in catalogue.ids:
                raise UnknownItemError(
                    f"item {item_id!r} is not in model version {engine.version} nor PUT")
            self.store().hide_item(item_id)
            return self.assemble(engine.artifact, catalogue.without_item(item_id))

        engine = await self.versions.update(change)
        return ItemResponse(item_id=item_id, model_version=engine.version, hidden=True)

    async def restore(self, item_id: str) -> ItemResponse:
        """Serve a trained item hidden by DELETE again (idempotent: a visible one answers the
        same); 404 for an item the serving version neither has nor serves from a PUT (a PUT
        item, once deleted, comes back by PUT with its text)."""
        self.limits.check_id("item_id", item_id)

        def change(engine: Engine) -> Engine:
            catalogue: Catalogue = engine.catalogue or Catalogue(None)
            if item_id in catalogue.ids:
                return engine  # a PUT item is served, never hidden
            if item_id not in engine.artifact.arrays.item_ids:
                raise UnknownItemError(
                    f"item {item_id!r} is not in model version {engine.version} nor PUT: an "
                    f"item PUT and then deleted comes back by PUT with its text")
            if item_id not in catalogue.hidden:
                return engine
            self.store().unhide_item(item_id)
            return self.assemble(engine.artifact, catalogue.restored(item_id))

        engine = await self.versions.update(change)
        return ItemResponse(item_id=item_id, model_version=engine.version, hidden=False)

    def _checked(self, text: str) -> str:
        if not text.strip():
            raise InvalidInputError("text is blank: an item is placed by what its text says",
                                    [{"loc": ["body", "text"], "msg": "blank text"}])
        if len(text) > self.max_text_chars:
            raise InvalidInputError(
                f"text has {len(text)} characters, more than RELREC_MAX_ITEM_TEXT_CHARS="
                f"{self.max_text_chars}",
                [{"loc": ["body", "text"], "msg": "text too long"}])
        return text


def _session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own unrelated exception types
        raise ArtifactRejectedError(
            f"{path.parent.name}/{path.name} does not load in onnxruntime: {exc}") from exc
