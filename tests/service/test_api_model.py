"""GET /model through the real app: the serving version as its manifest describes it, on both
history stores (SQLite and a real redis-server), and 503 before any version loads.
Test issue #22: only a Prometheus label carried the version before.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from models import artifact as art
from models.version import relrec_version
from service.app import create_app
from service.loader import LoadedArtifact
from tests.service.conftest import assert_error, make_settings


def test_model_describes_the_serving_version(
    tiny_artifact_dir: Path, history_url: str, loaded: LoadedArtifact
) -> None:
    manifest = art.read_manifest(loaded.path)
    with TestClient(create_app(make_settings(tiny_artifact_dir, history_url))) as c:
        r = c.get("/model")
        assert r.status_code == 200, r.text
        body = r.json()
    assert body["version"] == loaded.version
    assert body["kind"] == "hlr"
    assert body["hyperparameters"]["dim"] == 16 and body["hyperparameters"]["n_memory"] == 4
    assert body["counts"] == {
        "users": 240,
        "items": 120,
        "interactions": manifest.counts.interactions,
    }
    assert body["metrics"] == manifest.metrics and body["metrics"]  # the tiny run evaluated
    assert body["created_at"].startswith(manifest.created_at.isoformat()[:19])
    assert body["trained_with"] == manifest.relrec_version
    assert body["served_by"] == relrec_version()
    assert body["l_max"] == 8
    assert body["index"]["metric"] == "L2" and body["index"]["factory"]
    assert body["fold_in"] == "hinge"
    assert body["refit"] is False


def test_model_is_503_until_a_version_loads_and_guarded_by_the_read_key(
    tmp_path: Path, sqlite_url: str, tiny_artifact_dir: Path
) -> None:
    with TestClient(create_app(make_settings(tmp_path / "empty", sqlite_url))) as c:
        assert_error(c.get("/model"), 503, "not_ready")
    settings = make_settings(tiny_artifact_dir, sqlite_url, read_api_keys="r-key")
    with TestClient(create_app(settings)) as c:
        assert_error(c.get("/model"), 401, "unauthorized")
        assert c.get("/model", headers={"X-API-Key": "r-key"}).status_code == 200
