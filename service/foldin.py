"""Fold-in: a user vector for a user known only by their posted history (DESIGN §4, step 2).

Stage: between the history read and retrieval, on the request path, numpy only. Reads the
artifact's tables and what the manifest declares (`Manifest.fold_in`: the method and its
parameters, written by the exporter for each model kind), and fits one vector to the user's
items under the model's own objective, so that the service never branches on the model kind:

- `hinge` (the relational models): a few projected (semi-)gradient steps of the training
  objective Σ_j Σ_n [d(u, j) − d(u, n) + margin]₊ over the history items j and sampled
  negatives n, with d(u, v) = ‖p + r(p, q_v) − q_v‖², r = LRAM(p, q_v) (LRML's relation and
  HLR's user-slot term; 0 without a memory), starting from the mean of the items' vectors and
  projected into the unit ball after every step as in training. Items sit near p + r, not near
  p, so the mean of the items alone (the old stand-in) is off by the mean relation and ignores
  what the user did not pick; the fit corrects both. The relation is held fixed within a step
  (its derivative in p is dropped): it keeps a step a handful of small matmuls.
- `least_squares` (ALS): the closed form of ALS's user step, x = (YᵀCY + λI)⁻¹ YᵀC p, what
  `implicit`'s `recalculate_user` computes, with YᵀY + λI precomputed once per version.
- `constant` (most popular): every user has the same vector.

`MeanFoldIn` is today's stand-in, kept for `RELREC_FOLD_IN=false` and as the comparison of
tests/service/test_foldin.py. Negatives are drawn from a generator seeded by the history itself,
so the same history always gets the same vector (and the same recommendations).
"""

from __future__ import annotations

import zlib
from typing import Any, Protocol

import numpy as np

__all__ = [
    "ConstantFoldIn",
    "FoldIn",
    "HingeFoldIn",
    "LeastSquaresFoldIn",
    "MeanFoldIn",
    "build_fold_in",
]


class FoldIn(Protocol):
    """Maps a history (item rows, newest first) to a user vector `[d]`."""

    def vector(self, hist: np.ndarray) -> np.ndarray: ...


def _project(vec: np.ndarray) -> np.ndarray:
    """Into the unit ball, like every trained row (training projects after each step)."""
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 1.0 else vec


class MeanFoldIn:
    """The mean of the history items' vectors, projected: cheap, and blind to relations."""

    def __init__(self, items: np.ndarray, project: bool = True) -> None:
        self.items = items
        self.project = project

    def vector(self, hist: np.ndarray) -> np.ndarray:
        vec = np.asarray(self.items[hist], np.float32).mean(axis=0)
        return _project(vec) if self.project else vec


class ConstantFoldIn:
    """One vector for everyone (most popular: the ranking does not depend on the user)."""

    def __init__(self, vec: np.ndarray) -> None:
        self.vec = np.asarray(vec, np.float32)

    def vector(self, hist: np.ndarray) -> np.ndarray:
        return self.vec


class HingeFoldIn:
    """Projected semi-gradient descent on the hinge objective; see the module docstring."""

    def __init__(
        self,
        items: np.ndarray,  # [V, d]
        keys: np.ndarray,  # [d, N]
        memories: np.ndarray,  # [N, d]
        margin: float,
        steps: int = 8,
        n_negatives: int = 64,
        lr: float = 0.3,
    ) -> None:
        # A mapped table is float32 already (no copy); an overlay's StackedRows stays as it
        # is, gathered per call, so a PUT item costs no private copy of the table.
        self.items = np.ascontiguousarray(items, np.float32) if isinstance(items, np.ndarray) \
            else items
        self.keys = np.ascontiguousarray(keys, np.float32)
        self.memories = np.ascontiguousarray(memories, np.float32)
        self.margin = float(margin)
        self.steps = steps
        self.n_negatives = min(n_negatives, len(self.items))
        self.lr = lr

    def _relation(self, p: np.ndarray, q: np.ndarray) -> np.ndarray:
        """LRAM(p, q_v) for each row of q `[n, d]` -> `[n, d]`; zero without a memory."""
        if not len(self.memories):
            return np.zeros_like(q)
        logits = q @ (p[:, None] * self.keys)  # [n, N]: ((q ⊙ p) K), one matmul
        logits -= logits.max(axis=1, keepdims=True)
        w = np.exp(logits)
        w /= w.sum(axis=1, keepdims=True)
        return w @ self.memories  # [n, d]

    def vector(self, hist: np.ndarray) -> np.ndarray:
        hist = np.asarray(hist, np.int64)
        rng = np.random.default_rng(zlib.crc32(hist.tobytes()))
        neg = rng.integers(0, len(self.items), self.n_negatives)
        neg = neg[~np.isin(neg, hist)]
        n_pos = len(hist)
        q = self.items[np.concatenate([hist, neg])]  # [L + S, d]: positives, then negatives
        p = _project(q[:n_pos].mean(axis=0))
        if not len(neg):
            return p
        scale = self.lr / (n_pos * len(neg))
        for t in range(self.steps):
            e = p + self._relation(p, q) - q  # [L + S, d]: p + r − q
            dist = np.einsum("nd,nd->n", e, e)
            active = (dist[:n_pos, None] - dist[None, n_pos:] + self.margin) > 0  # [L, S]
            if not active.any():
                break
            # ∂/∂p of Σ_active d(j) − d(n), the relation held fixed: 2 (Σ_j a_j e_j − Σ_n b_n e_n)
            coef = np.concatenate([active.sum(axis=1), -active.sum(axis=0)]).astype(np.float32)
            # a decaying step (lr / (1 + t)): the activity set flips near the optimum, and a
            # constant step oscillates there (measured on planted data, issue 16)
            p = _project(p - (2.0 * scale / (1 + t)) * (coef @ e))
        return p.astype(np.float32)


class LeastSquaresFoldIn:
    """ALS's user step in closed form: x = (YᵀY + λI + Σ_j (c − 1) y_j y_jᵀ)⁻¹ Σ_j c y_j."""

    def __init__(self, items: np.ndarray, regularization: float, confidence: float) -> None:
        self.items = items  # the artifact's mapped table: no float64 copy per worker (issue 21)
        dim = items.shape[1]
        gram = np.zeros((dim, dim), np.float64)
        for start in range(0, len(items), 65536):  # YᵀY in float64, a chunk at a time
            part = np.asarray(items[start:start + 65536], np.float64)
            gram += part.T @ part
        self.gram = gram + regularization * np.eye(dim)  # [d, d]
        self.confidence = float(confidence)

    def vector(self, hist: np.ndarray) -> np.ndarray:
        y = np.asarray(self.items[np.asarray(hist, np.int64)], np.float64)  # [L, d]
        a = self.gram + (self.confidence - 1.0) * (y.T @ y)
        b = self.confidence * y.sum(axis=0)
        return np.linalg.solve(a, b).astype(np.float32)


def build_fold_in(
    declared: Any,  # models.artifact.FoldInInfo | None
    arrays: Any,  # models.artifact.ArtifactArrays
    margin: float,
    enabled: bool = True,
    steps: int = 8,
) -> FoldIn:
    """The fold-in the manifest declares (hinge for artifacts that declare none: every
    relational version before issue 16); the mean of the items when turned off."""
    method = "hinge" if declared is None else declared.method
    params = {} if declared is None else dict(declared.params)
    if method == "constant":
        return ConstantFoldIn(np.asarray(arrays.users[0]) if len(arrays.users) else
                              np.ones(arrays.items.shape[1], np.float32))
    if not enabled:
        return MeanFoldIn(arrays.items, project=method == "hinge")
    if method == "least_squares":
        return LeastSquaresFoldIn(arrays.items, float(params["regularization"]),
                                  float(params["confidence"]))
    return HingeFoldIn(arrays.items, arrays.keys, arrays.memories,
                       float(params.get("margin", margin)), steps=steps)
