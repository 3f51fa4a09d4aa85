"""Retriever: candidate items for a micro-batch by translated FAISS queries.

First stage of the request path (DESIGN §4.3). The exact distance is ‖p_u + r(u,v) − q_v‖²
with r(u,v) = w(u,v)·M, slot weights w in the simplex (LRML, HLR, HLR++). The items a user
should get lie near p_u + r, not near p_u: the memory rows of a trained model are longer than
the unit-ball embeddings (norms 1-3 on ML-1M), so searching around p_u alone misses them.

The query (probe) the service uses is p_u + w̄·M with the history-based estimate

    w̄ = mean over the user's history items j of softmax((p_u ⊙ q_j) K)

i.e. the slot weights of LRAM(p_u, q_j), the relation LRML induces and HLR's user-slot term,
averaged over items the user is known to like (uniform weights without a history; p_u alone
for models without memory). Measured on an HLR trained on ML-1M (d=100, N=20, L_max=50, 2810
items, 500 users; `bench/retrieval.py --probes all --hnsw 16,64,256`), tie-aware recall@10 of
the two-stage result vs exhaustive exact scoring of every item:

    probes, index                          C=25    C=50    C=100   C=200   C=300   C=500
    p_u + w̄·M, exact (the default)         0.986   1.000   1.000   1.000   1.000   1.000
    p_u + w̄·M, HNSW32 efSearch=256         0.986   1.000   1.000   1.000   1.000   1.000
    p_u + w̄·M, HNSW32 efSearch=64          0.985   0.999   0.999   0.999   0.999   0.999
    p_u + mean(M) (uniform weights)         0.950   0.993   0.999   1.000   1.000   1.000
    p_u + m_i for each slot, round robin    0.443   0.675   0.888   0.981   0.997   1.000
    p_u                                     0.596   0.757   0.875   0.953   0.973   0.991

Other probe sets stay available (`probes=`) for models where they do better, and the bench
reports them side by side. Seen items are excluded here, so that C unseen candidates reach
the exact re-rank.

An allow-list (`candidates` of a request) longer than `selector_min` ids is searched the same
way, restricted to its rows by a FAISS id selector (`candidates_among`), so that C of them,
not all, reach the exact re-rank; on an exact (Flat) index the C are the allowed rows nearest
to the probes, as exhaustive search over the list would find them (on a refined fast scan,
pqfs, the list is searched in its exact part, so there too).

With `pools` (`service/user_pools.py`), a trained user's candidates come from the user's
stored pool whenever a bound proves them the catalogue's nearest (what exact search would
return), and from the FAISS index otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import faiss
import numpy as np

from service.user_pools import UserPools, member

log = logging.getLogger(__name__)

__all__ = ["Padded", "ProbeKind", "Retriever", "pad_histories", "refined_index"]

ProbeKind = Literal["relation", "centroid", "user", "slots"]
# Histories padded to one width: rows `[B, L]` int64 (pads: row 0) and mask `[B, L]` float32
# (1 real, 0 pad), newest first. The recommender pads a micro-batch's histories once and hands
# the same arrays to the retriever's probes and to the ranker's feed (issue 18).
Padded = tuple[np.ndarray, np.ndarray]


def pad_histories(hists: Sequence[np.ndarray], width: int) -> Padded:
    """`hists` (newest first, each at most `width` long) as rows and mask `[B, width]`."""
    rows = np.zeros((len(hists), width), np.int64)
    mask = np.zeros((len(hists), width), np.float32)
    for i, h in enumerate(hists):
        rows[i, : len(h)] = h
        mask[i, : len(h)] = 1.0
    return rows, mask


class Retriever:
    """Probes -> one FAISS search per batch -> per-user candidate rows (unseen, best first)."""

    def __init__(
        self,
        index: Any,  # faiss.Index over item vectors, L2, id = item row
        item_vecs: np.ndarray,  # [V, d]
        keys: np.ndarray,  # [d, N]
        memories: np.ndarray,  # [N, d]; N = 0 for models without memory (CML)
        n_candidates: int,
        probes: ProbeKind = "relation",
        selector_min: int = 256,
        pools: UserPools | None = None,
        on_pool: Callable[[int, int], None] | None = None,
    ) -> None:
        self.index = index
        # Where an id selector runs: the index itself, or, for a refined fast scan (pqfs),
        # its exact part, since FAISS's fast scan takes no search parameters.
        self.selectable = _selectable(index)
        self._refined = refined_index(index)
        self.item_vecs = item_vecs
        self.keys = np.asarray(keys, np.float32)
        self.memories = np.asarray(memories, np.float32)
        self.n_candidates = n_candidates
        self.probes = probes if len(self.memories) else "user"
        self.n_items = int(item_vecs.shape[0])
        self.selector_min = selector_min  # allow-lists longer than this: an id selector
        # Pools hold one probe's neighbours: used only with the probe set they were built for.
        self.pools = pools if pools is not None and pools.probe_kind == self.probes else None
        self.on_pool = on_pool or (lambda served, searched: None)  # requests per batch
        # The query parts that depend on no request, computed once per version.
        self._centroid: np.ndarray = (  # [d]; no memory: the probe is p_u, never this
            self.memories.mean(axis=0) if len(self.memories) else np.zeros(0, np.float32)
        )

    def queries(
        self,
        user_vecs: np.ndarray,
        hists: Sequence[np.ndarray],
        padded: Padded | None = None,
    ) -> np.ndarray:
        """Query vectors `[B, P, d]` (P = 1, or N for `slots`). `padded`: the same histories
        already padded (`pad_histories`), which saves padding them again here."""
        u = np.asarray(user_vecs, np.float32)  # [B, d]
        q: np.ndarray
        if self.probes == "user":
            q = u[:, None, :]
        elif self.probes == "centroid":
            q = (u + self._centroid)[:, None, :]
        elif self.probes == "slots":
            q = u[:, None, :] + self.memories[None, :, :]  # [B, N, d]
        else:
            q = (u + self.relation_weights(u, hists, padded) @ self.memories)[:, None, :]
        return np.ascontiguousarray(q, dtype=np.float32)

    def relation_weights(
        self,
        user_vecs: np.ndarray,
        hists: Sequence[np.ndarray],
        padded: Padded | None = None,
    ) -> np.ndarray:
        """w̄ `[B, N]`: mean over history items of softmax((p_u ⊙ q_j) K); uniform if none.
        One pass over the whole micro-batch; `padded` (rows, mask) replaces `hists`."""
        b, n = len(user_vecs), len(self.memories)
        if padded is None:
            padded = pad_histories(hists, max((len(h) for h in hists), default=0))
        count = padded[1].sum(axis=1, keepdims=True)  # [B, 1]
        width = int(count.max(initial=0.0))  # real slots come first: the pads past it go
        if width == 0:
            return np.full((b, n), 1.0 / n, np.float32)
        rows, mask = padded[0][:, :width], padded[1][:, :width]  # [B, L]
        hist = self.item_vecs[rows]  # [B, L, d]
        logits = (user_vecs[:, None, :] * hist) @ self.keys  # [B, L, N]
        logits -= logits.max(axis=-1, keepdims=True)
        w = np.exp(logits)
        w /= w.sum(axis=-1, keepdims=True)  # [B, L, N]
        mean = (w * mask[..., None]).sum(axis=1) / np.maximum(count, 1.0)  # [B, N]
        return np.where(count > 0, mean, 1.0 / n).astype(np.float32)

    def candidates(
        self,
        user_vecs: np.ndarray,  # [B, d]
        hists: Sequence[np.ndarray],  # B arrays of history item rows, newest first
        seen: Sequence[np.ndarray],  # B arrays of item rows to exclude
        n: int | None = None,
        padded: Padded | None = None,  # `hists` already padded, if the caller has them
        user_rows: Sequence[int] | None = None,  # trained users' rows (-1: none), for pools
    ) -> list[np.ndarray]:
        """Up to n unseen item rows per user, nearest first (probes interleaved by rank):
        from the user's pool where it provably holds them, else by one FAISS search."""
        n = self.n_candidates if n is None else n
        queries = self.queries(user_vecs, hists, padded)  # [B, P, d]
        seen = [np.sort(s) for s in seen]  # sorted already (np.unique): ~1 µs each
        out: list[np.ndarray | None] = [None] * len(queries)
        if self.pools is not None and user_rows is not None:
            out = self.pools.candidates(self.item_vecs, user_rows, queries[:, 0], seen, n)
        rest = [i for i, found in enumerate(out) if found is None]
        self.on_pool(len(out) - len(rest), len(rest))
        if rest:
            found = self._searched(queries[rest], [seen[i] for i in rest], n)
            for i, rows in zip(rest, found, strict=True):
                out[i] = rows
        return [rows if rows is not None else _NONE for rows in out]

    def _searched(self, queries: np.ndarray, seen: Sequence[np.ndarray],
                  n: int) -> list[np.ndarray]:
        """`candidates` through the FAISS index, for queries `[B, P, d]`."""
        b, p, d = queries.shape
        per_probe = -(-n // p)
        # Seen items take places in a probe's list, so each asks for its share plus the
        # user's seen count. Heavy users (many seen items) are searched apart so that they do
        # not inflate k for everyone: at most two FAISS calls per batch.
        need = np.array([min(self.n_items, per_probe + len(s)) for s in seen])
        light = need <= min(self.n_items, 2 * per_probe)
        out: list[np.ndarray] = [_NONE] * b
        for group in (np.flatnonzero(light), np.flatnonzero(~light)):
            if not len(group):
                continue
            k = int(need[group].max())
            rows = self._search(queries[group].reshape(-1, d), k, per_probe)  # [G*P, k]
            rows = rows.reshape(len(group), p, k)
            for j, u in enumerate(group.tolist()):
                out[u] = _interleave(rows[j], seen[u], n)
        return out

    def _search(self, q: np.ndarray, k: int, share: int) -> np.ndarray:
        """Rows `[Q, k]` nearest to each query (-1 pads). On a refined fast scan (pqfs) the
        index's k_factor multiplies only the probe's `share`, not the seen-item slack in k:
        with the index's own, a user with 100 seen items at C = 20 had (20 + 100) x 16 codes
        re-ordered exactly; here 20 x 16 + 100, the same share of the ranking per probe."""
        if self._refined is None:
            return self.index.search(q, k)[1]
        wide = min(self.n_items, int(share * self._refined.k_factor) + k - share)
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = max(1.0, (wide + 0.5) / k)  # FAISS takes int(k x k_factor) codes
        return self.index.search(q, k, params=params)[1]

    def candidates_among(
        self,
        user_vecs: np.ndarray,  # [B, d]
        hists: Sequence[np.ndarray],  # B arrays of history item rows, newest first
        allows: Sequence[np.ndarray],  # B arrays of allowed item rows, seen ones removed
        n: int | None = None,
        padded: Padded | None = None,  # `hists` already padded, if the caller has them
    ) -> list[np.ndarray]:
        """Up to n rows of each user's allow-list, nearest to the probes first: one FAISS
        call per user (a selector applies to a whole call), over that user's probes."""
        n = self.n_candidates if n is None else n
        queries = self.queries(user_vecs, hists, padded)  # [B, P, d]
        out = []
        for q, allow in zip(queries, allows, strict=True):
            k = min(len(allow), -(-n // len(q)))
            if k == 0:
                out.append(np.zeros(0, np.int64))
                continue
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(allow, dtype=np.int64))
            params = faiss.SearchParameters()  # the base type: HNSW keeps its own efSearch
            params.sel = selector  # `selector` outlives the call (faiss holds a raw pointer)
            try:
                _, rows = self.selectable.search(q, k, params=params)  # [P, k]
            except RuntimeError as exc:  # an index without selector support (some GPU ones)
                log.warning("FAISS id selector refused (%s): scoring the whole list", exc)
                out.append(np.asarray(allow, np.int64))
                continue
            out.append(_interleave(rows, _NONE, n))
        return out


_NONE = np.zeros(0, np.int64)


def refined_index(index: Any) -> Any:
    """The FAISS IndexRefine behind `index` (pqfs), or None: another FAISS kind, or an index
    of relrec's own (the PUT-items overlay, Milvus) that only answers `search`."""
    if not isinstance(index, faiss.Index):
        return None
    inner = faiss.downcast_index(index)
    return inner if isinstance(inner, faiss.IndexRefine) else None


def _selectable(index: Any) -> Any:
    """The index an allow-list is searched in: a refined index's exact one (over the same
    rows), so that a long list on a pqfs version gets its exact nearest C, as on Flat."""
    refined = refined_index(index)
    return index if refined is None else faiss.downcast_index(refined.refine_index)


def _interleave(rows: np.ndarray, seen: np.ndarray, n: int) -> np.ndarray:
    """Round robin over the probes' ranked lists `[P, k]`: rank 0 of every probe, then rank
    1, ...; first occurrence wins; seen rows (`seen` sorted) and FAISS pads (-1) are dropped.
    One probe (the default, `relation`) has no repeats to remove."""
    flat = rows.T.reshape(-1)  # rank-major
    keep = flat >= 0
    if len(seen):
        keep &= ~member(flat, seen)
    flat = flat[keep]
    if len(rows) > 1:
        _, first = np.unique(flat, return_index=True)
        flat = flat[np.sort(first)]
    return flat[:n].astype(np.int64)
