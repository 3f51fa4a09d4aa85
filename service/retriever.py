"""Retriever: candidate items for a micro-batch by translated multi-probe FAISS search.

First stage of the request path (DESIGN §4.3). The exact distance is ‖p_u + r(u,v) − q_v‖²
with r(u,v) = w·M a convex combination of the memory rows M (LRML, HLR, HLR++): the items a
user should get lie near the translated polytope p_u + conv(M), not near p_u. So each user
sends several query vectors (probes): p_u + m_i for every memory slot i, plus p_u itself and
estimates from the history (see `probes`). All probes of all users go to FAISS in one search;
each item keeps its smallest distance to any probe, seen items are dropped, and the C nearest
remain for the exact re-rank. How well this works is measured, not assumed:
`tests/service/test_retriever.py` and `bench/retrieval.py` report recall@10 of the two-stage
result against exhaustive exact scoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Retriever"]


class Retriever:
    """Probes -> one FAISS search -> per-user candidate rows (unseen, nearest first)."""

    def __init__(
        self,
        index: Any,  # faiss.Index over item vectors, L2, row = item row
        item_vecs: np.ndarray,  # [V, d]
        memories: np.ndarray,  # [N, d]; N = 0 for models without memory (CML)
        n_candidates: int,
        history_probes: int = 0,
    ) -> None:
        self.index = index
        self.item_vecs = item_vecs
        self.memories = np.asarray(memories, np.float32)
        self.n_candidates = n_candidates
        self.history_probes = history_probes
        self.n_items = int(item_vecs.shape[0])

    @property
    def n_probes(self) -> int:
        return 1 + len(self.memories) + self.history_probes

    def probes(self, user_vecs: np.ndarray, hists: Sequence[np.ndarray]) -> np.ndarray:
        """Query vectors `[B, P, d]`: p_u, p_u + m_i for each slot, the newest history items.

        A history item j the user liked satisfies q_j ≈ p_u + r(u, j), so q_j itself is a
        probe translated by a relation the model induced for this user; users with a shorter
        history repeat p_u there (duplicate probes cost a little search and change nothing).
        """
        b, d = user_vecs.shape
        parts = [user_vecs[:, None, :]]  # [B, 1, d]
        if len(self.memories):
            parts.append(user_vecs[:, None, :] + self.memories[None, :, :])  # [B, N, d]
        if self.history_probes:
            extra = np.repeat(user_vecs[:, None, :], self.history_probes, axis=1)  # [B, H, d]
            for i, h in enumerate(hists):
                h = h[: self.history_probes]
                extra[i, : len(h)] = self.item_vecs[h]
            parts.append(extra)
        return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)

    def candidates(
        self,
        user_vecs: np.ndarray,  # [B, d]
        hists: Sequence[np.ndarray],  # B arrays of history item rows, newest first
        seen: Sequence[np.ndarray],  # B arrays of item rows to exclude
        n: int | None = None,
    ) -> list[np.ndarray]:
        """Up to n unseen item rows per user, nearest to any probe first."""
        n = self.n_candidates if n is None else n
        queries = self.probes(user_vecs, hists)  # [B, P, d]
        b, p, d = queries.shape
        # Seen items may fill a probe's list, so each probe asks for n plus the user's seen
        # count. Heavy users (many seen items) are searched apart so that they do not inflate
        # k for everyone; at most two FAISS calls per batch.
        need = np.array([min(self.n_items, n + len(s)) for s in seen])
        light = need <= min(self.n_items, 2 * n)
        out: list[np.ndarray] = [np.zeros(0, np.int64)] * b
        for group in (np.flatnonzero(light), np.flatnonzero(~light)):
            if not len(group):
                continue
            k = int(need[group].max())
            dist, rows = self.index.search(queries[group].reshape(-1, d), k)
            dist, rows = dist.reshape(len(group), p * k), rows.reshape(len(group), p * k)
            for j, u in enumerate(group):
                out[u] = _merge(dist[j], rows[j], seen[u], n)
        return out


def _merge(dist: np.ndarray, rows: np.ndarray, seen: np.ndarray, n: int) -> np.ndarray:
    """Rows by their smallest distance to any probe, without seen rows and pads (-1)."""
    keep = rows >= 0
    if len(seen):
        keep &= ~np.isin(rows, seen)
    dist, rows = dist[keep], rows[keep]
    order = np.argsort(dist, kind="stable")
    rows = rows[order]
    _, first = np.unique(rows, return_index=True)
    return rows[np.sort(first)][:n].astype(np.int64)
