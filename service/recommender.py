"""Recommender: one micro-batch of requests -> recommendations (DESIGN §4, steps 1-5).

Reads the online history (history store) and the training history (artifact CSR), builds each
user's vector (trained p_u; else fitted to the history by the fold-in the manifest declares,
`service/foldin.py`; else the most popular items), retrieves
candidates with translated FAISS queries, re-ranks them exactly with `scorer.onnx`, drops seen
items and returns the top k with scores, the version and, on request, explanations. Every
request of a batch shares one store round trip, one FAISS search and one ONNX call.

Degraded mode: when the history store cannot be read (Redis down), the batch is answered from
the artifact alone, as if no interaction had been posted since training: trained users get
their trained vector and training history, everyone else the popular items, and every such
response says `source="training_only"`. (A full Redis still serves reads: no degradation.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from models.idmap import IdMap
from service.errors import StoreUnavailableError, UnknownItemError
from service.explainer import Explainer
from service.foldin import FoldIn, MeanFoldIn
from service.history import HistoryStore
from service.loader import LoadedArtifact
from service.ranker import Ranked, Ranker
from service.retriever import Padded, Retriever, pad_histories
from service.schemas import (
    ExplainItem,
    RecommendedItem,
    RecommendResponse,
    SimilarResponse,
    Source,
    UnknownFilterId,
)

__all__ = ["Query", "Recommender", "StageObserver", "Tables", "first_occurrences", "to_score"]

StageObserver = Callable[[str, float], None]


def to_score(distance: float) -> float:
    """1 / (1 + exp(distance)), computed without overflow: higher is better, in [0, 1]."""
    return float(np.exp(-np.logaddexp(0.0, distance)))


@dataclass(frozen=True)
class Query:
    """One user's request. `exclude`: item ids never to return; `candidates`: when given, the
    only item ids to rank (scored exactly, no retrieval); `offset`: ranks to skip (paging)."""

    user_id: str
    k: int
    explain: bool = False
    offset: int = 0
    exclude: tuple[str, ...] = ()
    candidates: tuple[str, ...] | None = None


@dataclass(frozen=True, eq=False)
class Tables:
    """The tables of one version the recommender reads: id maps, user vectors, popularity and
    training histories (not the graph, the index or the manifest)."""

    version: str
    l_max: int
    user_ids: IdMap
    item_ids: IdMap
    users: np.ndarray  # [U, d]
    popularity: np.ndarray  # [V] training interactions per item
    popular_rows: np.ndarray  # [V] item rows, most popular first
    history_indptr: np.ndarray  # [U + 1]
    history_items: np.ndarray  # [nnz] item rows, newest first within a user
    index_metric: str = "L2"  # of the FAISS index: "L2" (squared distance) or "IP" (ALS)
    # rows DELETE /items hid: seen by every user, so never served (service/item_overlay.py)
    hidden_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def from_artifact(cls, loaded: LoadedArtifact) -> Tables:
        a = loaded.arrays
        return cls(
            version=loaded.version,
            l_max=loaded.l_max,
            user_ids=a.user_ids,
            item_ids=a.item_ids,
            users=a.users,
            popularity=a.popularity,
            popular_rows=loaded.popular_rows,
            history_indptr=a.history_indptr,
            history_items=a.history_items,
            index_metric=loaded.manifest.index.metric,
        )

    def history(self, user_row: int) -> np.ndarray:
        """A trained user's distinct items, newest first (models.artifact_arrays.user_history)."""
        indptr = self.history_indptr
        if not 0 <= user_row < len(indptr) - 1:
            return np.empty(0, np.int64)
        return np.asarray(self.history_items[indptr[user_row] : indptr[user_row + 1]])


@dataclass
class _UserState:
    """What step 1-2 found for one request."""

    hist: np.ndarray  # [ℓ] item rows fed to the model, newest first, ℓ <= L_max
    seen: np.ndarray  # item rows to exclude: posted, training, `exclude`, negative feedback
    vec: np.ndarray | None  # [d] user vector, None for the popular fallback
    source: Source
    allow: np.ndarray | None = None  # item rows of `candidates`, None: the whole catalogue
    unknown: list[UnknownFilterId] = field(default_factory=list)  # filter ids not in version
    row: int = -1  # the trained user's row (its vector, its candidate pool); -1: not trained


class Recommender:
    """Serves one artifact version; holds no per-request state, so threads may share it."""

    def __init__(
        self,
        tables: Tables,
        store: HistoryStore,
        retriever: Retriever,
        ranker: Ranker,
        history_len: int,
        on_stage: StageObserver | None = None,
        on_store_error: Callable[[], None] | None = None,
        fold_in: FoldIn | None = None,
        on_scored: Callable[[int], None] | None = None,
    ) -> None:
        self.tables = tables
        self.fold_in = fold_in or MeanFoldIn(retriever.item_vecs)
        self.store = store
        self.retriever = retriever
        self.ranker = ranker
        self.history_len = history_len
        self.on_stage = on_stage or (lambda stage, seconds: None)
        self.on_store_error = on_store_error or (lambda: None)
        self.on_scored = on_scored or (lambda n: None)  # candidates re-ranked, per call
        self.explainer = Explainer(ranker, tables.l_max)

    @property
    def version(self) -> str:
        return self.tables.version

    def recommend(self, user_id: str, k: int, explain: bool = False) -> RecommendResponse:
        return self.recommend_many([Query(user_id, k, explain)])[0]

    def recommend_many(self, queries: Sequence[Query]) -> list[RecommendResponse]:
        """All of a micro-batch, in order; without the store, from training data alone."""
        t0 = time.perf_counter()
        degraded = False
        users = [q.user_id for q in queries]
        try:
            posted, rejected = self.store.feedback_many(users, self.history_len)
        except StoreUnavailableError:
            self.on_store_error()
            posted, rejected, degraded = [[] for _ in queries], [[] for _ in queries], True
        states = [
            self._user_state(q, p, n) for q, p, n in zip(queries, posted, rejected, strict=True)
        ]
        if degraded:
            for s in states:
                s.source = "training_only"
        t1 = time.perf_counter()
        self.on_stage("history", t1 - t0)

        model_idx = [i for i, s in enumerate(states) if s.vec is not None]
        ranked: dict[int, Ranked] = {}
        if model_idx:
            ranked = self._retrieve_and_rank(
                [queries[i] for i in model_idx], [states[i] for i in model_idx], model_idx
            )
        out = []
        for i, (q, s) in enumerate(zip(queries, states, strict=True)):
            if s.vec is None:
                out.append(self._popular(q, s))
            else:
                out.append(self._personal(q, s, ranked[i]))
        return out

    def similar(self, item_id: str, k: int) -> SimilarResponse:
        """The k nearest items to `item_id` in the index's metric, itself excluded; 404 for an
        item this version does not know (implicit's `similar_items`, gorse's neighbours)."""
        t = self.tables
        row = t.item_ids.get(item_id)
        if row < 0:
            raise UnknownItemError(f"item {item_id!r} is not in model version {self.version}")
        vec = np.ascontiguousarray(self.retriever.item_vecs[row : row + 1], np.float32)  # [1, d]
        found, rows = self.retriever.index.search(vec, min(k + 1, len(t.popularity)))
        keep = (rows[0] >= 0) & (rows[0] != row)
        # An inner-product index returns similarities: their negation is the distance.
        dists = found[0][keep] if t.index_metric == "L2" else -found[0][keep]
        items = [_scored_item(t, r, d, None)
                 for r, d in zip(rows[0][keep][:k].tolist(), dists[:k].tolist(), strict=True)]
        return SimilarResponse(item_id=item_id, model_version=self.version, items=items)

    # -- step 1-2: history and user vector ----------------------------------------------------

    def _user_state(self, q: Query, posted_ids: list[str], negative_ids: list[str]) -> _UserState:
        t = self.tables
        posted = self._rows(posted_ids)  # ids unknown to this version are dropped
        user_row = t.user_ids.get(q.user_id)
        trained = t.history(user_row) if user_row >= 0 else np.empty(0, np.int64)
        both = np.concatenate([posted, trained])
        # First occurrence wins: posted (newest) before training history, both newest first.
        hist = first_occurrences(both)[: t.l_max]
        unknown: list[UnknownFilterId] = []
        excluded = self._filter_rows(q.exclude, "exclude", unknown)
        # Negative feedback is never history, and its items are never recommended again.
        seen = np.unique(np.concatenate([both, excluded, self._rows(negative_ids),
                                         t.hidden_rows]))
        allow = None
        if q.candidates is not None:
            allow = first_occurrences(self._filter_rows(q.candidates, "candidates", unknown))
            allow = allow[~np.isin(allow, seen)]
        vec: np.ndarray | None = None
        source: Source = "popular"
        if user_row >= 0:
            vec, source = np.asarray(t.users[user_row]), "personalized"
        elif len(hist):
            vec, source = self.fold_in.vector(hist), "history"
        return _UserState(hist, seen, vec, source, allow, unknown,
                          user_row if source == "personalized" else -1)

    def _rows(self, item_ids: Sequence[str]) -> np.ndarray:
        """Rows of the ids this version knows, in order; unknown ids are dropped."""
        rows = self.tables.item_ids.get_rows(item_ids)  # one search for the mapped map
        return rows[rows >= 0]

    def _filter_rows(
        self,
        item_ids: Sequence[str],
        name: Literal["exclude", "candidates"],
        unknown: list[UnknownFilterId],
    ) -> np.ndarray:
        """`_rows`, listing the ids this version does not know in `unknown`."""
        known = self.tables.item_ids
        unknown += [UnknownFilterId(filter=name, item_id=x) for x in item_ids if x not in known]
        return self._rows(item_ids)

    # -- step 3-4: retrieval and exact re-ranking ---------------------------------------------

    def _retrieve_and_rank(
        self, queries: Sequence[Query], states: Sequence[_UserState], positions: Sequence[int]
    ) -> dict[int, Ranked]:
        user_vecs = np.stack([s.vec for s in states if s.vec is not None]).astype(np.float32)
        t0 = time.perf_counter()
        # Padded once: the retriever's probes and the ranker's feed read the same arrays.
        padded = pad_histories([s.hist for s in states], self.tables.l_max)  # [B, L] x 2
        cands = self._candidates(queries, states, user_vecs, padded)
        t1 = time.perf_counter()
        self.on_stage("retrieval", t1 - t0)
        ranked = self.ranker.rank(
            user_vecs,
            *padded,
            cands,
            [q.k + q.offset for q in queries],
        )
        self.on_stage("rerank", time.perf_counter() - t1)
        self.on_scored(sum(len(c) for c in cands))  # the ranker's pads are not candidates
        return dict(zip(positions, ranked, strict=True))

    def _candidates(
        self,
        queries: Sequence[Query],
        states: Sequence[_UserState],
        user_vecs: np.ndarray,
        padded: Padded,
    ) -> list[np.ndarray]:
        """Retrieved rows per request. An allow-list up to the retriever's `selector_min`
        ids is scored exactly as is; a longer one is searched with a FAISS id selector and C
        of its rows are scored (the list's nearest on a Flat index; approximate on HNSW, as
        retrieval over the catalogue is)."""
        out: list[np.ndarray] = [s.allow if s.allow is not None else _EMPTY for s in states]
        long = self.retriever.selector_min
        free = [i for i, s in enumerate(states) if s.allow is None]
        among = [i for i, s in enumerate(states) if s.allow is not None and len(s.allow) > long]
        for group in (free, among):
            if not group:
                continue
            depth = max(queries[i].k + queries[i].offset for i in group)
            n = max(self.retriever.n_candidates, depth)  # k + offset <= C always
            vecs, hists = user_vecs[group], [states[i].hist for i in group]
            pad = padded if len(group) == len(states) else (padded[0][group], padded[1][group])
            if group is free:
                seen = [states[i].seen for i in group]
                found = self.retriever.candidates(vecs, hists, seen, n, padded=pad,
                                                  user_rows=[states[i].row for i in group])
            else:
                allows = [a for i in group if (a := states[i].allow) is not None]
                found = self.retriever.candidates_among(vecs, hists, allows, n, padded=pad)
            for i, rows in zip(group, found, strict=True):
                out[i] = rows
        return out

    # -- step 5: responses --------------------------------------------------------------------

    def _personal(self, q: Query, s: _UserState, r: Ranked) -> RecommendResponse:
        t = self.tables
        rows, dists = r.rows[q.offset :], r.distances[q.offset :]
        because: list[list[ExplainItem] | None] = [None] * len(rows)
        if q.explain:
            because = list(self._because(s, rows, dists))
        items = [_scored_item(t, row, dist, why)
                 for row, dist, why in zip(rows.tolist(), dists.tolist(), because, strict=True)]
        return self._response(q, s, items)

    def _because(
        self, s: _UserState, rows: np.ndarray, dists: np.ndarray
    ) -> list[list[ExplainItem]]:
        """Per recommended item, the history items whose removal moves it away most
        (service/explainer.py); a folded-in vector is re-fitted without each item."""
        assert s.vec is not None
        refit = self.fold_in.vector if s.source == "history" else None
        effects = self.explainer.explain(s.vec, s.hist, rows, dists, refit)
        ids = self.tables.item_ids.ids
        return [
            [ExplainItem(item_id=str(ids[s.hist[t]]), weight=w, delta=d) for t, w, d in item]
            for item in effects
        ]

    def _popular(self, q: Query, s: _UserState) -> RecommendResponse:
        """Most popular items not seen: the answer for a user with no usable history."""
        t = self.tables
        depth = q.k + q.offset
        if s.allow is not None:
            pop = s.allow[np.lexsort((s.allow, -t.popularity[s.allow]))]  # as popular_rows
        elif len(s.seen):
            head = t.popular_rows[: depth + len(s.seen)]
            pop = head[~np.isin(head, s.seen)]
        else:
            pop = t.popular_rows
        items = [
            RecommendedItem(
                item_id=str(t.item_ids.ids[r]),
                score=float(t.popularity[r]) / max(1, len(t.user_ids)),
                distance=None,
                popularity=int(t.popularity[r]),
                because=[] if q.explain else None,
            )
            for r in pop[q.offset : depth]
        ]
        return self._response(q, s, items)

    def _response(self, q: Query, s: _UserState, items: list[RecommendedItem]) -> RecommendResponse:
        return RecommendResponse(
            user_id=q.user_id,
            model_version=self.version,
            source=s.source,
            items=items,
            unknown_ids=s.unknown,
        )


_EMPTY = np.zeros(0, np.int64)


def _scored_item(t: Tables, row: int, distance: float,
                 because: list[ExplainItem] | None) -> RecommendedItem:
    """One ranked item from the model's distance: the one place `score` is derived from it."""
    return RecommendedItem(item_id=str(t.item_ids.ids[row]), score=to_score(float(distance)),
                           distance=float(distance), popularity=int(t.popularity[row]),
                           because=because)


def first_occurrences(rows: np.ndarray) -> np.ndarray:
    """`rows` without repeats, in their first order: a history merged newest first (posted
    before trained), or a list a client gave with an id twice."""
    _, first = np.unique(rows, return_index=True)
    return rows[np.sort(first)]
