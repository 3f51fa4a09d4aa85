"""Per-user candidate pools written at export (training/pool_builder.py, issue 18): each pool
holds exactly the K unseen items nearest to the probe the service computes for the user, the
radius is the distance of the nearest unseen item left out, and `auto` builds them only where
the index is approximate and the budgets allow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models import artifact as art
from models.artifact_arrays import read_arrays, user_history
from service.retriever import Retriever
from training import pool_builder
from training.exporter import export_run
from training.index_builder import FLAT_MAX_ITEMS

K = 48


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory, tiny_run_dir: Path) -> Path:
    """The tiny HLR exported with pools of K items (its catalogue is small: auto builds none)."""
    return export_run(tiny_run_dir, tmp_path_factory.mktemp("pooled"), pools=K)


def test_pools_are_the_nearest_unseen_items_of_each_users_probe(pooled: Path) -> None:
    manifest = art.read_manifest(pooled)
    arrays = read_arrays(pooled)
    assert manifest.pools is not None and manifest.pools.k == K
    assert manifest.pools.users == len(arrays.users)
    art.verify(pooled, manifest)  # the three files are checksummed with the rest
    assert set(art.POOL_FILES) <= set(manifest.files)
    rows = np.load(pooled / art.POOL_ROWS)
    probes = np.load(pooled / art.POOL_PROBES)
    radius = np.load(pooled / art.POOL_RADIUS)
    retriever = Retriever(None, arrays.items, arrays.keys, arrays.memories, 0)
    items = np.asarray(arrays.items, np.float64)
    for u in range(len(arrays.users)):
        seen = user_history(arrays, u)
        probe = retriever.queries(arrays.users[u : u + 1], [seen[: manifest.l_max]])[0, 0]
        np.testing.assert_allclose(probes[u], probe, rtol=1e-5, atol=1e-6)
        dist = np.linalg.norm(items - probe, axis=1)
        dist[seen] = np.inf
        order = np.argsort(dist, kind="stable")
        unseen = int(np.isfinite(dist).sum())
        take = min(K, unseen)
        assert not np.isin(rows[u][:take], seen).any()
        np.testing.assert_allclose(dist[rows[u][:take]], dist[order[:take]], rtol=1e-5)
        assert (rows[u][take:] == -1).all()
        if take < unseen:
            assert radius[u] == pytest.approx(dist[order[take]], rel=1e-4)
        else:
            assert radius[u] == np.inf


def test_auto_builds_pools_only_above_exact_search_and_within_budgets() -> None:
    assert pool_builder.pool_size("auto", 1000, FLAT_MAX_ITEMS, 100) is None
    assert pool_builder.pool_size("auto", 1000, FLAT_MAX_ITEMS + 1, 100) == pool_builder.POOL_K
    huge_users = pool_builder.POOL_MAX_BYTES // (4 * pool_builder.POOL_K) + 1
    assert pool_builder.pool_size("auto", huge_users, 20_000, 8) is None
    assert pool_builder.pool_size("auto", 100_000, 1_000_000, 100) is None  # work budget
    assert pool_builder.pool_size("off", 1000, 100_000, 100) is None
    assert pool_builder.pool_size(16, 1000, 100, 100) == 16  # asked for: built
    assert pool_builder.pool_size(16, 1000, 100_000, 100, probes="slots") is None


def test_auto_export_of_a_small_catalogue_has_no_pools(tiny_artifact_dir: Path) -> None:
    manifest = art.read_manifest(art.resolve_current(tiny_artifact_dir))
    assert manifest.pools is None
    assert not set(art.POOL_FILES) & set(manifest.files)
