"""Explainer: which history items a recommendation rests on, by leaving each one out.

For a recommended item v and each history slot t, the explanation is the change in the model's
distance when slot t is removed: Δ_t = d(u without t, v) − d(u, v). A positive Δ_t means the
item moves away without that history item, i.e. the history item pulls it in. For a user known
only by their history (fold-in), the user vector is re-fitted without slot t, since it is made
of the history; for a trained user the vector stays and only the scorer's history term changes.
The weights are the shares of the positive changes, so they separate the item that caused a
recommendation from those that did not (attention weights, the former explanation, were close
to uniform on every model measured: issue 22).

Cost: one scorer call per explained user with one row per history slot (B = ℓ, C = k); only
requests with `explain=true` pay it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from service.ranker import Ranker

__all__ = ["N_EXPLAIN", "Explainer", "SlotEffect"]

N_EXPLAIN = 3  # history items listed per recommended item
SlotEffect = tuple[int, float, float]  # (history slot, weight, distance change)


class Explainer:
    """Leave-one-out effects of history slots on recommended items' distances."""

    def __init__(self, ranker: Ranker, l_max: int) -> None:
        self.ranker = ranker
        self.l_max = l_max

    def explain(
        self,
        vec: np.ndarray,  # [d] the user vector the items were ranked with
        hist: np.ndarray,  # [ℓ] history item rows, newest first
        rows: np.ndarray,  # [k] recommended item rows
        dists: np.ndarray,  # [k] their distances with the whole history
        refit: Callable[[np.ndarray], np.ndarray] | None,  # history -> vector; None: keep vec
    ) -> list[list[SlotEffect]]:
        """Per recommended item, up to N_EXPLAIN (slot, weight, Δ), largest Δ first."""
        n = len(hist)
        if n == 0 or len(rows) == 0:
            return [[] for _ in rows]
        vecs = np.stack([self._vector(vec, hist, t, refit) for t in range(n)])  # [ℓ, d]
        hist_rows = np.zeros((n, self.l_max), np.int64)  # [ℓ, L]
        hist_mask = np.zeros((n, self.l_max), np.float32)  # [ℓ, L]
        hist_rows[:, :n] = hist
        hist_mask[:, :n] = 1.0
        hist_mask[np.arange(n), np.arange(n)] = 0.0  # row t leaves slot t out
        without = self.ranker.distances(vecs, hist_rows, hist_mask, np.tile(rows, (n, 1)))
        delta = without - dists[None, :]  # [ℓ, k]
        return [_top_effects(delta[:, j]) for j in range(len(rows))]

    @staticmethod
    def _vector(
        vec: np.ndarray,
        hist: np.ndarray,
        t: int,
        refit: Callable[[np.ndarray], np.ndarray] | None,
    ) -> np.ndarray:
        if refit is None:
            return np.asarray(vec, np.float32)
        rest = np.delete(hist, t)
        # Without its only item a folded-in user has no vector: the origin stands for "none".
        return refit(rest) if len(rest) else np.zeros_like(vec, dtype=np.float32)


def _top_effects(delta: np.ndarray) -> list[SlotEffect]:
    """The slots with a positive Δ, largest first, weighted by their share of the positives."""
    positive = np.clip(delta.astype(np.float64), 0.0, None)
    total = float(positive.sum())
    if total <= 0.0:
        return []
    order = np.argsort(-delta, kind="stable")[:N_EXPLAIN]
    return [(int(t), float(positive[t] / total), float(delta[t])) for t in order if delta[t] > 0]
