"""Per-user candidate pools: a trained user's nearest items, taken when provably exact.

Part of retrieval (`service/retriever.py` asks here first). `training/pool_builder.py` stored,
for each trained user, the K unseen items nearest to the user's probe p⁰ (from the exported
history), and the distance R of the nearest unseen item it left out. A request's probe p
differs from p⁰ only where the user's history changed since (new interactions move w̄), by
δ = ‖p − p⁰‖; by the triangle inequality every item outside the pool is then at least R − δ
from p. So when the C-th nearest of the pool's items not seen now is nearer than R − δ, those
C are exactly the C nearest unseen items of the whole catalogue, what exact search over every
item would return (a Flat index), and no FAISS search is needed. Otherwise (the probe moved
too far, or posted and excluded items used the pool up) the request goes through the index.

Cost: K rows gathered and K distances a request (K = 256, d = 100: 26k multiply-adds) against
a scan of every item's codes (docs/benchmarks.md, "Serving at the floor"). The bound is
Euclidean (not squared) and keeps a float32 tolerance (`TOLERANCE`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import artifact as art

__all__ = ["TOLERANCE", "PoolTally", "UserPools", "member"]

# Slack on the bound, relative to 1 + R: the builder ranks by ‖q‖² − 2p·q + ‖p‖² in float32,
# whose error is ~1e-7 of the distances here; 1e-4 leaves a wide margin and costs nothing
# measurable (the margins are ~0.05 on the grown catalogue).
TOLERANCE = 1e-4


@dataclass(frozen=True, eq=False)
class UserPools:
    """The pool tables of one version, memory-mapped (shared by the workers)."""

    rows: np.ndarray  # [U, K] int32 item rows, nearest first, -1 pads
    probes: np.ndarray  # [U, d] float32: the probe each pool was searched for
    radius: np.ndarray  # [U] float32: distance of the nearest unseen item outside the pool
    probe_kind: str  # the probe set they hold (RELREC_PROBES must match to use them)

    @classmethod
    def open(cls, vdir: Path, info: art.PoolsInfo, n_users: int, n_items: int,
             dim: int) -> UserPools:
        """Map the files named by `info`; ValueError when their shapes disagree with the
        version's tables (files of two versions mixed)."""
        rows = np.load(vdir / art.POOL_ROWS, mmap_mode="r")
        probes = np.load(vdir / art.POOL_PROBES, mmap_mode="r")
        radius = np.load(vdir / art.POOL_RADIUS, mmap_mode="r")
        if rows.shape != (n_users, info.k) or probes.shape != (n_users, dim) \
                or radius.shape != (n_users,):
            raise ValueError(f"pool tables of shapes {rows.shape}, {probes.shape}, "
                             f"{radius.shape} for {n_users} users, K {info.k}, d {dim}")
        if len(rows) and int(rows.max(initial=-1)) >= n_items:
            raise ValueError(f"pool rows reach {int(rows.max())}, the version has {n_items} "
                             f"items")
        return cls(rows, probes, radius, info.probes)

    def candidates(self, items: np.ndarray, user_rows: Sequence[int], queries: np.ndarray,
                   seen: Sequence[np.ndarray], n: int) -> list[np.ndarray | None]:
        """Per request, its n nearest unseen rows (nearest first) when the bound proves them
        the catalogue's, else None. `user_rows`: -1 for a user without a pool (not trained);
        `queries` `[B, d]` the requests' probes; `seen` sorted rows to leave out."""
        out: list[np.ndarray | None] = [None] * len(user_rows)
        users = np.asarray(user_rows, np.int64)
        have = np.flatnonzero((users >= 0) & (users < len(self.rows)))
        if not len(have):
            return out
        pools = np.asarray(self.rows[users[have]], np.int64)  # [b, K]
        gathered = items[np.maximum(pools, 0)]  # [b, K, d]
        dist = np.sqrt(np.einsum("bkd,bkd->bk", diff := gathered - queries[have, None, :],
                                 diff))  # [b, K]
        moved = np.linalg.norm(queries[have] - self.probes[users[have]], axis=1)  # [b]
        radius = np.asarray(self.radius[users[have]], np.float64)  # inf: the pool holds all
        finite = np.isfinite(radius)
        bound = np.full(len(have), np.inf)
        bound[finite] = radius[finite] - moved[finite] - TOLERANCE * (1.0 + radius[finite])
        for j, i in enumerate(have.tolist()):
            out[i] = _certified(pools[j], dist[j], seen[i], n, float(bound[j]))
        return out


@dataclass
class PoolTally:
    """An `on_pool` callback of the Retriever that keeps count: requests answered from their
    pool and through the index (benches and tests; the service counts in /metrics)."""

    served: int = 0
    searched: int = 0

    def __call__(self, served: int, searched: int) -> None:
        self.served += served
        self.searched += searched


def _certified(pool: np.ndarray, dist: np.ndarray, seen: np.ndarray, n: int,
               bound: float) -> np.ndarray | None:
    """The pool's n nearest rows not in `seen` if they are provably the catalogue's (the n-th
    is nearer than `bound`, or the pool holds every unseen item: bound +inf), else None."""
    keep = pool >= 0
    if len(seen):
        keep &= ~member(pool, seen)
    rows, d = pool[keep], dist[keep]
    if len(rows) >= n:
        if n > 0 and not float(np.partition(d, n - 1)[n - 1]) < bound:
            return None
    elif bound != np.inf:
        return None
    order = np.lexsort((rows, d))[:n]
    return rows[order]


def member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """`np.isin(values, sorted_set)` by binary search: 2.5 µs against numpy's 26 µs for 60
    values in 42 (its table or sort methods allocate per call). `sorted_set` non-empty."""
    pos = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[pos] == values
