"""Per-user candidate pools (service/user_pools.py, issue 18): a pool answers only when its
bound proves the answer is exact search's, so candidates and served lists are the same with
and without pools, with the exported histories and after new interactions; a pool that the
bound does not cover, a user without one, placed items and another probe set all go through
the index."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest
from fastapi.testclient import TestClient

from models import artifact as art
from models.artifact_arrays import user_history
from service.app import create_app
from service.errors import ArtifactRejectedError
from service.loader import LoadedArtifact, load_artifact
from service.recommender import first_occurrences
from service.retriever import Retriever
from service.user_pools import PoolTally
from tests.service.conftest import make_settings
from training.exporter import export_run

K, C = 48, 10


@pytest.fixture(scope="module")
def pooled_root(tmp_path_factory: pytest.TempPathFactory, tiny_run_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("pooled")
    export_run(tiny_run_dir, root, pools=K)
    return root


@pytest.fixture(scope="module")
def pooled(pooled_root: Path) -> LoadedArtifact:
    return load_artifact(art.resolve_current(pooled_root), ort_threads=1)


def exact_index(items: np.ndarray) -> faiss.Index:
    index = faiss.IndexFlatL2(items.shape[1])
    index.add(np.ascontiguousarray(items, dtype=np.float32))
    return index


def counted(loaded: LoadedArtifact, pools: bool) -> tuple[Retriever, PoolTally]:
    """A Retriever over exact search, with or without the version's pools, and its tally of
    requests served from pools and searched."""
    tally = PoolTally()
    a = loaded.arrays
    retriever = Retriever(exact_index(a.items), a.items, a.keys, a.memories, C,
                          pools=loaded.pools if pools else None, on_pool=tally)
    return retriever, tally


def requests(loaded: LoadedArtifact, new: int, seed: int = 0
             ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[int]]:
    """Every trained user as the recommender sees them after `new` random new interactions:
    vectors, histories (newest first, at most L_max), sorted seen rows, user rows."""
    a, rng = loaded.arrays, np.random.default_rng(seed)
    rows = list(range(len(a.users)))
    hists, seen = [], []
    for u in rows:
        trained = user_history(a, u)
        posted = rng.choice(loaded.n_items, new, replace=False)
        both = np.concatenate([posted, trained])
        hists.append(first_occurrences(both)[: loaded.l_max])
        seen.append(np.unique(both))
    return np.asarray(a.users, np.float32), hists, seen, rows


def assert_same_neighbours(loaded: LoadedArtifact, probes: np.ndarray,
                           got: list[np.ndarray], want: list[np.ndarray]) -> None:
    """The same candidates up to ties: each list's distances to its probe (float64), sorted,
    agree (FAISS's exact search ranks in float32, so of two items 1e-7 apart at the C-th place
    it may keep either, and the pool the other)."""
    items = np.asarray(loaded.arrays.items, np.float64)
    for p, g, w in zip(probes, got, want, strict=True):
        assert len(g) == len(w)
        dist = [np.sort(np.linalg.norm(items[r] - p, axis=1)) for r in (g, w)]
        np.testing.assert_allclose(dist[0], dist[1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("new", [0, 1, 3])
def test_pools_give_exact_searchs_candidates(pooled: LoadedArtifact, new: int) -> None:
    vecs, hists, seen, rows = requests(pooled, new)
    with_pools, counts = counted(pooled, pools=True)
    without, _ = counted(pooled, pools=False)
    got = with_pools.candidates(vecs, hists, seen, C, user_rows=rows)
    want = without.candidates(vecs, hists, seen, C)
    assert_same_neighbours(pooled, without.queries(vecs, hists)[:, 0], got, want)
    assert counts.served > 0  # the pools did answer
    if new == 0:  # the exported histories: the stored probes, every pool answers
        assert (counts.served, counts.searched) == (len(rows), 0)


def test_a_pool_the_bound_does_not_cover_goes_through_the_index(pooled: LoadedArtifact) -> None:
    assert pooled.pools is not None
    vecs, hists, seen, rows = requests(pooled, 0)
    retriever, counts = counted(pooled, pools=True)
    # user 0 has seen all of its pool, user 1 is not a trained user (a fold-in vector)
    seen[0] = np.union1d(seen[0], pooled.pools.rows[0][pooled.pools.rows[0] >= 0])
    got = retriever.candidates(vecs[:3], hists[:3], seen[:3], C, user_rows=[0, -1, 2])
    want = counted(pooled, pools=False)[0].candidates(vecs[:3], hists[:3], seen[:3], C)
    assert_same_neighbours(pooled, retriever.queries(vecs[:3], hists[:3])[:, 0], got, want)
    assert (counts.served, counts.searched) == (1, 2)
    # a probe far from the stored one (another user's vector): the bound fails, the index
    # answers
    counts.served = counts.searched = 0
    far = retriever.candidates(vecs[5:6], hists[:1], seen[:1], C, user_rows=[0])
    near = counted(pooled, pools=False)[0].candidates(vecs[5:6], hists[:1], seen[:1], C)
    assert sorted(far[0].tolist()) == sorted(near[0].tolist())
    assert (counts.served, counts.searched) == (0, 1)


def test_pools_of_another_probe_set_are_not_used(pooled: LoadedArtifact) -> None:
    a = pooled.arrays
    retriever = Retriever(exact_index(a.items), a.items, a.keys, a.memories, C,
                          probes="user", pools=pooled.pools)
    assert retriever.pools is None


def test_pool_files_of_the_wrong_shape_reject_the_version(pooled_root: Path,
                                                          tmp_path: Path) -> None:
    vdir = tmp_path / "version"
    shutil.copytree(art.resolve_current(pooled_root), vdir)
    rows = np.load(vdir / art.POOL_ROWS)
    np.save(vdir / art.POOL_ROWS, rows[:, :-1])
    with pytest.raises(ArtifactRejectedError, match="candidate pools"):
        load_artifact(vdir, ort_threads=1, check_hashes=False)


def served(client: TestClient, users: list[str]) -> list[list[tuple[str, float]]]:
    out = []
    for u in users:
        r = client.get(f"/recommend/{u}", params={"k": 5})
        assert r.status_code == 200, r.text
        out.append([(i["item_id"], round(i["distance"], 5)) for i in r.json()["items"]])
    return out


def pool_lookups(client: TestClient, outcome: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'relrec_pool_lookups_total{{outcome="{outcome}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_the_service_serves_the_same_lists_with_and_without_pools(
        pooled_root: Path, pooled: LoadedArtifact, tmp_path: Path) -> None:
    users = pooled.arrays.user_ids.to_list()[:25]
    item = pooled.arrays.item_ids.to_list()[3]
    lists = []
    for enabled in (True, False):
        url = f"sqlite:///{tmp_path / f'history-{enabled}.db'}"
        with TestClient(create_app(make_settings(pooled_root, url,
                                                 user_pools=enabled))) as client:
            before = served(client, users)
            posted = client.post("/interactions", json={"interactions": [
                {"user_id": u, "item_id": item, "timestamp": 1} for u in users[:10]]})
            assert posted.status_code == 200, posted.text
            lists.append((before, served(client, users)))
            if enabled:
                assert pool_lookups(client, "served") >= len(users)
            else:
                assert pool_lookups(client, "served") == 0
    assert lists[0] == lists[1]


def test_placed_items_turn_the_pools_off(pooled: LoadedArtifact) -> None:
    """A pool holds none of the items PUT since the export, so its bound covers none of them:
    the runtime serves such an engine without pools (service/runtime.py)."""
    from service.runtime import _pools

    assert _pools(pooled, pooled.arrays, True) is pooled.pools
    assert _pools(pooled, pooled.arrays, False) is None
    placed = dataclasses.replace(pooled.arrays, items=np.asarray(pooled.arrays.items).copy())
    assert _pools(pooled, placed, True) is None
