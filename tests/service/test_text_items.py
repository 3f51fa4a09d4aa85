"""Text-only items (issue "Semantic relations"): an artifact whose item table ends with items
that have text and no interaction is loaded, and those items are posted and recommended like
any other, with no text at request time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.loader import load_artifact
from tests.service.conftest import make_settings
from tests.training.text.test_items import block_of, planted_cold_data, text_config


@pytest.fixture(scope="module")
def text_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.exporter import export_run
    from training.pipeline import run

    root = tmp_path_factory.mktemp("text-items")
    split, item_text, _ = planted_cold_data(root)
    run(text_config("hlr", item_text, root / "cache", epochs=6), root / "run", split=split)
    export_run(root / "run", root / "artifacts")
    return root / "artifacts"


@pytest.fixture
def client(text_artifacts: Path, tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(text_artifacts, f"sqlite:///{tmp_path / 'history.db'}")
    with TestClient(create_app(settings)) as c:
        yield c


def test_loader_accepts_text_only_items(text_artifacts: Path) -> None:
    loaded = load_artifact(text_artifacts / "current", ort_threads=1)
    info = loaded.manifest.text_items
    assert info is not None and info.count == 8
    assert info.first_row + info.count == loaded.n_items == loaded.index.ntotal


def test_text_only_items_are_posted_and_recommended(client: TestClient,
                                                    text_artifacts: Path) -> None:
    loaded = load_artifact(text_artifacts / "current", ort_threads=1)
    info = loaded.manifest.text_items
    assert info is not None
    ids = loaded.arrays.item_ids.to_list()
    text_only = ids[info.first_row:]
    # A new user who liked two text-only items of block 2 (never seen in training) ...
    posted = [i for i in text_only if block_of(i) == 2]
    r = client.post("/interactions", json={"interactions": [
        {"user_id": "newcomer", "item_id": i, "timestamp": 1_700_000_000 + t}
        for t, i in enumerate(posted)]})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == len(posted) and r.json()["rejected"] == []
    # ... is recommended block 2, from vectors that came from text alone.
    r = client.get("/recommend/newcomer", params={"k": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "history"
    items = [it["item_id"] for it in body["items"]]
    assert not set(items) & set(posted)
    assert sum(block_of(i) == 2 for i in items) >= 6, items
    # A trained user's long list can hold text-only items: they are in the index and scored.
    user = loaded.arrays.user_ids.to_list()[0]
    r = client.get(f"/recommend/{user}", params={"k": 100})
    assert r.status_code == 200, r.text
    assert set(text_only) & {it["item_id"] for it in r.json()["items"]}
