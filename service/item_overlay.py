"""Item overlay: serve items placed at run time, and hide items, beside an unchanged artifact.

Stage: engine assembly (issue 20). A version's FAISS index, tables and `scorer.onnx` are the
trained catalogue's and stay untouched (memory-mapped, shared by workers). Items PUT with
their text get rows after the artifact's, `V ..< V + K`, and are served through three thin
stand-ins that the retriever, ranker and recommender take in place of the artifact's parts:

- `OverlayIndex`: answers `search` like the FAISS index, merging the index's neighbours with
  an exact search over the K placed vectors (K is small: the items since the last export) and
  dropping hidden rows, so that retrieval, allow-lists and similar items all see them;
- `VectorSession`: answers `run` like the scorer's session, gathering candidate and history
  vectors from the extended table and running `scorer_vectors.onnx` (the same arithmetic with
  vectors as inputs), since `scorer.onnx` can only read trained rows;
- the tables with the ids, zero popularity and the hidden rows (`Tables.hidden_rows`, which
  the recommender adds to every user's seen set: recommendations, popular fallback, lists);
- `StackedRows`: the item table as the artifact's mapped rows followed by the placed ones,
  without concatenating them: a concatenation would give every worker a private copy of the
  whole table after one PUT, undoing the sharing of issue 21.

With nothing placed and nothing hidden, `serving_parts` returns the artifact's own parts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.loader import LoadedArtifact
from service.recommender import Tables

__all__ = ["OverlayIndex", "ServingParts", "StackedRows", "VectorSession", "serving_parts"]


@dataclass(frozen=True, eq=False)
class ServingParts:
    """What the engine's retriever, ranker, fold-in and recommender are built from."""

    tables: Tables
    arrays: Any  # ArtifactArrays, its item table and ids extended by the placed items
    index: Any  # the FAISS index, or an OverlayIndex around it
    session: Any  # the scorer's ORT session, or a VectorSession


def serving_parts(artifact: LoadedArtifact, base_index: Any, ids: Sequence[str],
                  vectors: np.ndarray, hidden: frozenset[str],
                  vector_session: Any) -> ServingParts:
    """The parts serving `artifact` plus the items `ids` at `vectors` `[K, d]`, without the
    items named in `hidden` (ids of either kind; unknown ones are ignored). `base_index`
    answers for the artifact's items: its FAISS index, or its Milvus collection."""
    tables = Tables.from_artifact(artifact)
    arrays = artifact.arrays
    if not len(ids) and not hidden:
        return ServingParts(tables, arrays, base_index, artifact.session)
    base_n = artifact.n_items
    item_ids = arrays.item_ids
    popularity = arrays.popularity
    items = arrays.items
    popular = artifact.popular_rows
    if len(ids):
        item_ids = arrays.item_ids.extended(ids)  # a mapped map stays mapped (issue 21)
        popularity = np.concatenate([popularity, np.zeros(len(ids), popularity.dtype)])
        items = StackedRows(items, vectors)
        popular = np.concatenate([popular, np.arange(base_n, base_n + len(ids))])
    hidden_rows = np.unique(item_ids.rows([h for h in hidden if h in item_ids]))
    hidden_rows = hidden_rows.astype(np.int64)
    tables = dataclasses.replace(
        tables, item_ids=item_ids, popularity=popularity,
        popular_rows=popular[~np.isin(popular, hidden_rows)], hidden_rows=hidden_rows)
    arrays = dataclasses.replace(arrays, items=items, item_ids=item_ids, popularity=popularity)
    index = OverlayIndex(base_index, items[base_n:len(items)], base_n, hidden_rows,
                         artifact.manifest.index.metric)
    session = artifact.session
    if len(ids):
        session = VectorSession(vector_session, items)
    return ServingParts(tables, arrays, index, session)


class StackedRows:
    """Rows `[V + K, d]` read from two tables, the artifact's `[V, d]` then the placed `[K, d]`.

    Answers the reads the serving path makes of an item table (`shape`, `len`, a row, a slice
    of rows, rows gathered by an integer array of any shape, as numpy indexes them) with new
    arrays of only the rows asked for; the base table is never copied, so after a PUT a worker
    keeps sharing the artifact's mapped pages with the others. `np.asarray` of the whole of it
    concatenates (a private copy): nothing on the request path asks for that.
    """

    def __init__(self, base: np.ndarray, extra: np.ndarray) -> None:
        if base.ndim != 2 or extra.ndim != 2 or base.shape[1] != extra.shape[1]:
            raise ValueError(f"row tables of different widths: {base.shape} and {extra.shape}")
        self.base = base
        self.extra = np.ascontiguousarray(extra, base.dtype)
        self.base_n = int(base.shape[0])
        self.shape = (self.base_n + int(self.extra.shape[0]), int(base.shape[1]))
        self.dtype = base.dtype
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step == 1 and stop <= self.base_n:
                return self.base[start:stop]
            if step == 1 and start >= self.base_n:
                return self.extra[start - self.base_n:stop - self.base_n]
            return self._gather(np.arange(start, stop, step))
        if isinstance(key, (int, np.integer)):
            return self._gather(np.asarray(key, np.int64))
        rows = np.asarray(key)
        if rows.dtype == bool or not np.issubdtype(rows.dtype, np.integer):
            raise IndexError(f"StackedRows takes rows as integers, not {rows.dtype}")
        return self._gather(rows)

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        """Rows of either table, in the shape of `rows` plus the row width; numpy's bounds
        and negative-index rules."""
        n = self.shape[0]
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"row out of range for an item table of {n} rows")
        rows = np.where(rows < 0, rows + n, rows)
        out = np.empty(rows.shape + (self.shape[1],), self.dtype)
        in_base = rows < self.base_n
        out[in_base] = self.base[rows[in_base]]
        out[~in_base] = self.extra[rows[~in_base] - self.base_n]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = np.concatenate([np.asarray(self.base), self.extra])
        return whole if dtype is None else whole.astype(dtype, copy=False)


class OverlayIndex:
    """A FAISS index's neighbours merged with exact search over extra rows, hidden rows out.

    `search(x, k, params=None)` answers as `faiss.Index.search`: distances and rows `[Q, k]`,
    best first, -1 where fewer exist; L2 gives squared distances (ascending), IP inner
    products (descending). An id selector in `params.sel` (allow-lists) applies to both.
    """

    def __init__(self, base: Any, extra: np.ndarray, base_n: int, hidden_rows: np.ndarray,
                 metric: str = "L2") -> None:
        self.base = base
        self.extra = np.ascontiguousarray(extra, np.float32)  # [K, d]
        self.extra_sq = (self.extra * self.extra).sum(1)  # [K]
        self.base_n = base_n
        self.hidden = np.asarray(hidden_rows, np.int64)
        self.metric = metric
        self.d = int(base.d)
        self.ntotal = int(base.ntotal) + len(self.extra)
        self._hidden_in_base = int((self.hidden < base_n).sum())

    def search(self, x: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(x, np.float32)  # [Q, d]
        kb = min(int(self.base.ntotal), k + self._hidden_in_base)
        if params is None:
            dist, rows = self.base.search(x, kb)
        else:
            dist, rows = self.base.search(x, kb, params=params)
        extra_rows = self._allowed_extra(params)  # [K'] rows of the extra items searched
        if len(extra_rows):
            vecs = self.extra[extra_rows - self.base_n]  # [K', d]
            dots = x @ vecs.T  # [Q, K']
            extra_dist = (dots if self.metric == "IP" else
                          (x * x).sum(1, keepdims=True) - 2 * dots
                          + self.extra_sq[extra_rows - self.base_n][None, :])
            dist = np.concatenate([dist, extra_dist.astype(np.float32)], axis=1)
            rows = np.concatenate([rows, np.broadcast_to(extra_rows, extra_dist.shape)], axis=1)
        return self._best(dist, rows, k)

    def _allowed_extra(self, params: Any) -> np.ndarray:
        rows = np.arange(self.base_n, self.base_n + len(self.extra), dtype=np.int64)
        selector = getattr(params, "sel", None) if params is not None else None
        if selector is not None and len(rows):
            keep = np.fromiter((selector.is_member(int(r)) for r in rows), bool, len(rows))
            rows = rows[keep]
        return rows

    def _best(self, dist: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Per query the k best valid, visible rows; pads -1 with the worst distance."""
        worst = -np.inf if self.metric == "IP" else np.inf
        bad = (rows < 0) | np.isin(rows, self.hidden)
        dist = np.where(bad, worst, dist)
        order = np.argsort(-dist if self.metric == "IP" else dist, axis=1, kind="stable")[:, :k]
        best_rows = np.take_along_axis(np.where(bad, -1, rows), order, axis=1)
        best_dist = np.take_along_axis(dist, order, axis=1)
        if best_rows.shape[1] < k:  # fewer rows than asked: pad as FAISS does
            pad = k - best_rows.shape[1]
            best_rows = np.pad(best_rows, ((0, 0), (0, pad)), constant_values=-1)
            best_dist = np.pad(best_dist, ((0, 0), (0, pad)), constant_values=worst)
        return best_dist.astype(np.float32), best_rows.astype(np.int64)


class VectorSession:
    """The scorer session's `run` over rows of an extended item table, by the vector graph.

    Takes the feed of `models.scorer_io.scorer_feed` (rows) and feeds `scorer_vectors.onnx`
    the rows' vectors; a row outside the table gets distance +inf (as `scorer.onnx` gives it)
    and a history slot outside it is a pad.
    """

    def __init__(self, session: Any, items: np.ndarray | StackedRows) -> None:
        self.session = session
        self.items = items  # [V + K, d]: gathered per call, never copied whole

    def run(self, outputs: Sequence[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        n = len(self.items)
        hist_rows, cand_rows = feed["hist_rows"], feed["cand_rows"]
        hist_ok = (hist_rows >= 0) & (hist_rows < n)  # [B, L]
        cand_ok = (cand_rows >= 0) & (cand_rows < n)  # [B, C]
        vec_feed = {
            "user_vecs": feed["user_vecs"],
            "hist_vecs": _f32(self.items[np.where(hist_ok, hist_rows, 0)]),  # [B, L, d]
            "hist_mask": np.ascontiguousarray(feed["hist_mask"] * hist_ok, np.float32),
            "cand_vecs": _f32(self.items[np.where(cand_ok, cand_rows, 0)]),  # [B, C, d]
        }
        result = list(self.session.run(list(outputs), vec_feed))
        result[0] = np.where(cand_ok, result[0], np.float32(np.inf)).astype(np.float32)
        return result

    def get_outputs(self) -> Any:
        return self.session.get_outputs()


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32)
