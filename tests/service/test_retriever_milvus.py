"""The Milvus retriever (service/retriever_milvus.py, issue 21) against Milvus Lite, the same
engine embedded, started by the test on a local file: the same top 10 as the local FAISS
index for every user of a planted catalogue, a reload that switches collections, and a
version without a collection refused while the old one keeps serving."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
pytest.importorskip("milvus_lite", reason="the milvus extra is not installed")

from models import artifact as art  # noqa: E402
from service.app import create_app  # noqa: E402
from service.cli import main as cli_main  # noqa: E402
from service.retriever_milvus import collection_name, connect, publish  # noqa: E402
from tests.service.conftest import assert_error, make_settings  # noqa: E402

Root = tuple[Path, str, str]


def top10(client: TestClient, users: list[str]) -> dict[str, list[str]]:
    out = {}
    for user in users:
        r = client.get(f"/recommend/{user}", params={"k": 10})
        assert r.status_code == 200, r.text
        out[user] = [item["item_id"] for item in r.json()["items"]]
    return out


def known_users(vdir: Path, n: int = 60) -> list[str]:
    from models.artifact_arrays import read_arrays

    ids = read_arrays(vdir).user_ids.to_list()
    return [str(u) for u in ids[:: max(1, len(ids) // n)]][:n]


def test_same_top10_as_the_local_index(medium_version_dir: Path, tmp_path: Path) -> None:
    uri = str(tmp_path / "milvus.db")
    name = publish(medium_version_dir, uri)
    assert name == collection_name(medium_version_dir.name)
    users = known_users(medium_version_dir) + ["nobody"]
    history = f"sqlite:///{tmp_path / 'h.db'}"
    with TestClient(create_app(make_settings(medium_version_dir, history))) as local:
        want = top10(local, users)
    settings = make_settings(medium_version_dir, history, retriever="milvus", milvus_uri=uri)
    with TestClient(create_app(settings)) as remote:
        got = top10(remote, users)
        engine = remote.app.state.runtime.versions.current  # type: ignore[attr-defined]
        assert engine.recommender.retriever.index.name == name
        assert engine.artifact.index is None  # items.faiss was not read
    same = sum(got[u] == want[u] for u in users)
    assert same == len(users), {u: (got[u], want[u]) for u in users if got[u] != want[u]}
    assert all(len(v) == 10 for v in got.values())


def test_reload_switches_collections(artifacts_root: Root, tmp_path: Path) -> None:
    root, first, second = artifacts_root
    uri = str(tmp_path / "milvus.db")
    for version in (first, second):
        assert cli_main(["publish-milvus", str(root / version), "--milvus-uri", uri]) == 0
    assert cli_main(["publish-milvus", str(root / first), "--milvus-uri", uri]) == 0  # kept
    history = f"sqlite:///{tmp_path / 'h.db'}"
    settings = make_settings(root, history, retriever="milvus", milvus_uri=uri)
    with TestClient(create_app(settings)) as c:
        runtime = c.app.state.runtime  # type: ignore[attr-defined]
        before = top10(c, ["u1-c1", "u2-c2"])
        assert c.get("/recommend/u1-c1").json()["model_version"] == first
        art.point_current(root, second)
        assert c.post("/admin/reload").status_code == 200
        assert c.get("/recommend/u1-c1").json()["model_version"] == second
        index = runtime.versions.current.recommender.retriever.index
        assert index.name == collection_name(second)
        assert top10(c, ["u1-c1", "u2-c2"]) == before  # the same model, exported twice
        # a version never published is refused; the serving one keeps its collection
        connect(uri).drop_collection(collection_name(first))
        art.point_current(root, first)
        body = assert_error(c.post("/admin/reload"), 409, "artifact_rejected")
        assert "publish-milvus" in body["error"]["message"]
        r = c.get("/recommend/u1-c1")
        assert r.status_code == 200 and r.json()["model_version"] == second


def test_milvus_retriever_needs_a_uri(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="milvus_uri"):
        make_settings(tmp_path, f"sqlite:///{tmp_path / 'h.db'}", retriever="milvus")


def test_disconnect_lets_another_process_open_the_lite_file(medium_version_dir: Path,
                                                           tmp_path: Path) -> None:
    """A Milvus Lite file admits one process: after `disconnect`, a process that published
    (the exporter's job, a bench) no longer holds it, and a server process can open it."""
    import subprocess
    import sys

    from service.retriever_milvus import disconnect

    uri = str(tmp_path / "milvus.db")
    name = publish(medium_version_dir, uri)
    probe = ("import sys; from service.retriever_milvus import connect; "
             "sys.exit(0 if connect(sys.argv[1]).has_collection(sys.argv[2]) else 1)")
    root = Path(__file__).resolve().parents[2]

    def other_process_opens() -> bool:
        done = subprocess.run([sys.executable, "-c", probe, uri, name], cwd=root,
                              capture_output=True, text=True, timeout=120)
        return done.returncode == 0

    assert not other_process_opens()  # held by this process's embedded server
    disconnect(uri)
    assert other_process_opens()
    assert connect(uri).has_collection(name)  # and this process can connect again
    disconnect(uri)
