"""Ranker: exact re-ranking of retrieved candidates by the artifact's `scorer.onnx`.

Second stage of the request path (DESIGN §4.4): reads user vectors, histories and candidate
rows of a micro-batch, runs *one* onnxruntime call for all of it, and returns each request's
top k with its distances (and, for HLR/HLR++, the attention over the history that explains
them). Requests of one batch have different candidate counts; the rows are padded to the
longest with a repeat of their first candidate and the pads are never ranked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from models.scorer_io import ATTENTION, DISTANCES, scorer_feed

__all__ = ["Ranked", "Ranker"]


@dataclass(frozen=True)
class Ranked:
    """One request's result, best first."""

    rows: np.ndarray  # [k] int64 item rows
    distances: np.ndarray  # [k] float32 squared distances, smaller is better
    attention: np.ndarray | None  # [k, L] weights of the history slots, when asked and known


class Ranker:
    """Scores candidates exactly; stateless apart from the (thread-safe) ORT session."""

    def __init__(self, session: ort.InferenceSession, l_max: int, has_attention: bool) -> None:
        self.session = session
        self.l_max = l_max
        self.has_attention = has_attention

    def rank(
        self,
        user_vecs: np.ndarray,  # [B, d]
        hist_rows: np.ndarray,  # [B, L] int64, pads are any valid row
        hist_mask: np.ndarray,  # [B, L] float32, 1 real, 0 pad
        candidates: Sequence[np.ndarray],  # B arrays of item rows, any lengths
        ks: Sequence[int],
        explain: bool = False,
    ) -> list[Ranked]:
        """Top `ks[b]` of `candidates[b]` by exact distance, for every b in one ORT call."""
        b = len(candidates)
        width = max((len(c) for c in candidates), default=0)
        if b == 0 or width == 0:
            return [_empty() for _ in range(b)]
        cand = np.zeros((b, width), np.int64)  # [B, C]
        for i, c in enumerate(candidates):
            if len(c):
                cand[i, : len(c)] = c
                cand[i, len(c) :] = c[0]
        outputs = [DISTANCES, ATTENTION] if explain and self.has_attention else [DISTANCES]
        result = self.session.run(outputs, scorer_feed(user_vecs, hist_rows, hist_mask, cand))
        dist = result[0]  # [B, C]
        att = result[1] if len(result) > 1 else None  # [B, C, L]
        ranked = []
        for i, c in enumerate(candidates):
            n = len(c)
            k = min(ks[i], n)
            if k <= 0:
                ranked.append(_empty())
                continue
            top = _top_k(dist[i, :n], k)
            ranked.append(Ranked(cand[i, top], dist[i, top], None if att is None else att[i, top]))
        return ranked

    def distances(
        self,
        user_vecs: np.ndarray,  # [B, d]
        hist_rows: np.ndarray,  # [B, L]
        hist_mask: np.ndarray,  # [B, L]
        cand_rows: np.ndarray,  # [B, C] int64
    ) -> np.ndarray:
        """The scorer's distances `[B, C]` for fixed candidates (service.explainer)."""
        feed = scorer_feed(user_vecs.astype(np.float32), hist_rows, hist_mask, cand_rows)
        (dist,) = self.session.run([DISTANCES], feed)
        return np.asarray(dist)


def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k smallest values, ascending; ties broken by position (stable)."""
    if k < len(values):
        part = np.argpartition(values, k - 1)[:k]
        return part[np.lexsort((part, values[part]))]
    return np.argsort(values, kind="stable")


def _empty() -> Ranked:
    return Ranked(np.zeros(0, np.int64), np.zeros(0, np.float32), None)
