"""Per-user candidate pools: each trained user's K nearest unseen items, written at export.

Stage: a step of the export (`training/exporter.py`), after the histories are written. On a
catalogue whose probes stand far from every item (the grown 100k catalogue of
docs/benchmarks.md: the best item at cosine ~0.5), no graph or list index finds the nearest
items cheaply, and a scan of every item's codes is most of a request's CPU. A trained user's
probe, p_u + w̄·M, moves only through w̄ (the history's relation weights), so the items nearest
to it change little between requests; this stage finds, by exact search over every item,

    rows    the K unseen items nearest to the user's probe (as the service computes it from
            the exported history), nearest first;
    probe   that probe;
    radius  the distance of the nearest unseen item left out (inf: the pool holds them all).

`service/user_pools.py` serves a request from the pool when the triangle inequality proves
the pool holds the catalogue's nearest C (the request's probe moved by δ from the stored one:
every item outside is at least radius − δ away), and through the FAISS index otherwise, so
a pool never changes an answer, only its cost.

Memory: (4·K + 4·d + 4)·U bytes, mapped and shared by the workers; build: one exact search of
U probes over V items (U·V·d multiply-adds in BLAS). `auto` builds them where the index is
approximate (above FLAT_MAX_ITEMS items: exact search is cheap below) and both fit the
budgets below.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from models import artifact as art
from models.artifact_arrays import ArtifactArrays, read_arrays, user_history
from service.retriever import ProbeKind, Retriever
from training.index_builder import FLAT_MAX_ITEMS

__all__ = ["POOL_K", "POOL_MAX_BYTES", "POOL_MAX_WORK", "build_pools", "pool_size", "pool_tables"]

log = logging.getLogger(__name__)

# 256 items a user: on the grown 100k catalogue, every trained user's request was served from
# the pool with the exported history, 100% after 5 random new interactions and 98.4% after
# 20, 98.7% after taking 5 of their own recommendations (bench/pools.py; docs/benchmarks.md).
# 128 kept 89.0% and 92.1% of those, 64 kept 40.2% and 67.6%.
POOL_K = 256
POOL_MAX_BYTES = 512 * 2**20  # auto: no pools above (~370k users at d 100 and K 256)
POOL_MAX_WORK = 1e12  # auto: no pools above U·V·d multiply-adds of exact search
BLOCK_BYTES = 64 * 2**20  # the [users, V] float32 block of distances searched at a time


def pool_size(spec: str | int, n_users: int, n_items: int, dim: int,
              probes: ProbeKind = "relation") -> int | None:
    """K for `spec` ("auto", "off" or a number), or None for no pools, with the reason logged.

    Pools need one probe a user (`slots` searches N). `auto` builds them where the index is
    approximate (above FLAT_MAX_ITEMS items) and the files and the build fit the budgets."""
    if spec == "off" or probes == "slots" or n_users == 0:
        return None
    if spec != "auto":
        return int(spec)
    size = (4 * POOL_K + 4 * dim + 4) * n_users
    work = float(n_users) * n_items * dim
    if n_items <= FLAT_MAX_ITEMS:
        reason = f"{n_items} items are searched exactly (<= {FLAT_MAX_ITEMS})"
    elif size > POOL_MAX_BYTES:
        reason = f"{size / 2**20:.0f} MB for {n_users} users > {POOL_MAX_BYTES / 2**20:.0f} MB"
    elif work > POOL_MAX_WORK:
        reason = f"{work:.1e} multiply-adds to build > {POOL_MAX_WORK:.0e}"
    else:
        return POOL_K
    log.info("pools: none (auto: %s; --pools K builds them)", reason)
    return None


def build_pools(vdir: Path, k: int, l_max: int, probes: ProbeKind = "relation") -> art.PoolsInfo:
    """Write the pool files of the version at `vdir` (histories already written) and return
    the manifest's record of them."""
    started = time.perf_counter()
    tables = pool_tables(read_arrays(vdir), k, l_max, probes)
    for name, table in zip(art.POOL_FILES, tables, strict=True):
        np.save(vdir / name, table)
    seconds = time.perf_counter() - started
    size = sum((vdir / name).stat().st_size for name in art.POOL_FILES)
    log.info("pools: %d nearest unseen items for each of %d users (%.1f MB) in %.1fs", k,
             len(tables[0]), size / 2**20, seconds)
    return art.PoolsInfo(k=k, users=len(tables[0]), probes=probes, bytes=size,
                         seconds=round(seconds, 3))


def pool_tables(arrays: ArtifactArrays, k: int, l_max: int, probes: ProbeKind = "relation"
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows `[U, k]` int32, probes `[U, d]` float32, radius `[U]` float32) by exact search of
    every user's probe over every item, as many probes at a time as `BLOCK_BYTES` of distances
    hold (at most 256)."""
    n_users, dim = arrays.users.shape
    retriever = Retriever(None, arrays.items, arrays.keys, arrays.memories, 0, probes=probes)
    items = np.ascontiguousarray(arrays.items, dtype=np.float32)
    item_sq = np.einsum("vd,vd->v", items, items)  # [V]
    rows = np.full((n_users, k), -1, np.int32)
    probe_table = np.zeros((n_users, dim), np.float32)
    radius = np.full(n_users, np.inf, np.float32)
    chunk = max(1, min(256, BLOCK_BYTES // (4 * max(1, len(items)))))
    for start in range(0, n_users, chunk):
        users = np.arange(start, min(n_users, start + chunk))
        probe = _probes(retriever, arrays, users, l_max)  # [B, d]
        sq = item_sq[None, :] - 2.0 * (probe @ items.T) + np.einsum("bd,bd->b", probe,
                                                                      probe)[:, None]  # [B, V]
        for b, u in enumerate(users.tolist()):
            rows[u], radius[u] = _nearest_unseen(sq[b], user_history(arrays, u), k)
        probe_table[users] = probe
    return rows, probe_table, radius


def _probes(retriever: Retriever, arrays: ArtifactArrays, users: np.ndarray,
            l_max: int) -> np.ndarray:
    """The service's probe for each user in `users`, from the exported history (newest first,
    at most l_max), as `service/recommender.py` builds it for a user with nothing posted."""
    hists = [user_history(arrays, u)[:l_max] for u in users.tolist()]
    vecs = np.ascontiguousarray(arrays.users[users], dtype=np.float32)
    return retriever.queries(vecs, hists)[:, 0, :]


def _nearest_unseen(sq: np.ndarray, seen: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """(rows `[k]`, -1 padded, nearest first; the distance of the nearest row left out) among
    the rows not in `seen`, from squared distances `sq` `[V]` (modified)."""
    sq[seen] = np.inf
    unseen = len(sq) - len(np.unique(seen))
    take = min(k, unseen)
    out = np.full(k, -1, np.int32)
    if take == 0:
        return out, float("inf")
    if take < unseen:
        part = np.argpartition(sq, take)[: take + 1]
        part = part[np.lexsort((part, sq[part]))]
        out[:take] = part[:take]
        return out, float(np.sqrt(max(float(sq[part[take]]), 0.0)))
    part = np.argpartition(sq, take - 1)[:take] if take < len(sq) else np.arange(len(sq))
    out[:take] = part[np.lexsort((part, sq[part]))]
    return out, float("inf")
