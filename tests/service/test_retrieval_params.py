"""C and efSearch: the manifest's choice (issue 18) is read, a setting wins over it, and a
version without the record falls back to the old defaults."""

from __future__ import annotations

import shutil
from pathlib import Path

import faiss
import pytest
from fastapi.testclient import TestClient

from models import artifact as art
from models.artifact_arrays import user_history
from service.app import create_app
from service.loader import FALLBACK_EF_SEARCH, FALLBACK_N_CANDIDATES, load_artifact
from tests.service.conftest import make_settings


@pytest.fixture(scope="module")
def hnsw_version(tmp_path_factory: pytest.TempPathFactory, tiny_run_dir: Path) -> Path:
    """The tiny HLR exported with an HNSW index, so that efSearch is chosen too."""
    from training.exporter import export_run

    return export_run(tiny_run_dir, tmp_path_factory.mktemp("hnsw"), index="hnsw")


def _ef(index: object) -> int:
    return int(faiss.downcast_index(index).hnsw.efSearch)


def _scored(client: TestClient) -> float:
    text = client.get("/metrics").text
    return float(text.split("\nrelrec_candidates_scored_total ")[1].split()[0])


def test_the_loader_takes_c_and_ef_from_the_manifest(hnsw_version: Path) -> None:
    chosen = art.read_manifest(hnsw_version).retrieval
    assert chosen is not None and chosen.ef_search is not None
    loaded = load_artifact(hnsw_version, ort_threads=1)
    assert (loaded.n_candidates, loaded.ef_search) == (chosen.n_candidates, chosen.ef_search)
    assert _ef(loaded.index) == chosen.ef_search


def test_a_setting_wins_over_the_manifest(hnsw_version: Path) -> None:
    loaded = load_artifact(hnsw_version, ort_threads=1, n_candidates=37, ef_search=12)
    assert (loaded.n_candidates, loaded.ef_search, _ef(loaded.index)) == (37, 12, 12)


def test_a_version_without_the_record_gets_the_fallback(version_dir: Path,
                                                        tmp_path: Path) -> None:
    old = tmp_path / version_dir.name
    shutil.copytree(version_dir, old)
    manifest = art.read_manifest(old)
    art.write_manifest(old, manifest.model_copy(update={"retrieval": None}))
    loaded = load_artifact(old, ort_threads=1)
    assert (loaded.n_candidates, loaded.ef_search) == (FALLBACK_N_CANDIDATES,
                                                       FALLBACK_EF_SEARCH)
    assert load_artifact(old, ort_threads=1, n_candidates=9).n_candidates == 9


def _served(artifact_dir: Path, db: Path, users: list[str], **settings: object
            ) -> tuple[list[list[tuple[str, float]]], float]:
    """Every user's top 10 (id, score) and the candidates re-ranked per request."""
    app = create_app(make_settings(artifact_dir, f"sqlite:///{db}", **settings))
    with TestClient(app) as c:
        out = []
        for u in users:
            body = c.get(f"/recommend/{u}", params={"k": 10}).json()
            assert body["source"] == "personalized"
            out.append([(it["item_id"], it["score"]) for it in body["items"]])
        return out, _scored(c) / len(users)


def test_the_service_re_ranks_the_manifest_c_unless_set(
    tiny_artifact_dir: Path, version_dir: Path, tmp_path: Path
) -> None:
    """Results are identical on a fixed artifact whether C comes from the manifest or from an
    equal setting, and RELREC_N_CANDIDATES changes how many candidates are re-ranked."""
    chosen = art.read_manifest(version_dir).retrieval
    assert chosen is not None
    loaded = load_artifact(version_dir, ort_threads=1)
    users = [str(u) for u in loaded.arrays.user_ids.ids[:12]]
    unseen = min(loaded.n_items - len(user_history(loaded.arrays, r)) for r in range(12))
    assert chosen.n_candidates + 7 <= unseen  # room for the override to show
    from_manifest, scored = _served(tiny_artifact_dir, tmp_path / "a.db", users)
    assert scored == chosen.n_candidates
    again, _ = _served(tiny_artifact_dir, tmp_path / "b.db", users,
                       n_candidates=chosen.n_candidates)
    assert again == from_manifest
    more, scored_more = _served(tiny_artifact_dir, tmp_path / "c.db", users,
                                n_candidates=chosen.n_candidates + 7)
    assert scored_more == chosen.n_candidates + 7
    # The exact search's top C+7 holds its top C: the best re-ranked score can only improve.
    assert all(m[0][1] >= f[0][1] - 1e-6 for m, f in zip(more, from_manifest, strict=True))
