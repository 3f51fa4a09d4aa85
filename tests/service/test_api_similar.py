"""GET /items/{item_id}/similar through the real app and the tiny trained HLR, on both history
stores (SQLite and a real redis-server). Test issue #22.

The planted data puts items of one block together, so an item's neighbours are checkable:
mostly items of its own block.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.loader import LoadedArtifact
from tests.service.conftest import assert_error, make_settings


@pytest.fixture
def client(tiny_artifact_dir: Path, history_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tiny_artifact_dir, history_url, max_k=500))) as c:
        yield c


def block(item_id: str) -> str:
    return item_id.split("-")[1]  # "i17-b2" -> "b2"


def test_neighbours_are_the_nearest_items_of_the_same_block(
    client: TestClient, loaded: LoadedArtifact
) -> None:
    vecs = loaded.arrays.items
    same_block = 0
    for row in (0, 31, 62, 93):
        item = str(loaded.arrays.item_ids.ids[row])
        r = client.get(f"/items/{item}/similar", params={"k": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["item_id"] == item and body["model_version"] == loaded.version
        got = [it["item_id"] for it in body["items"]]
        assert len(got) == 5 and item not in got
        # Exactly the 5 nearest other items by squared distance (the tiny index is exact).
        d = ((vecs - vecs[row]) ** 2).sum(axis=1)
        d[row] = np.inf
        expected = [str(loaded.arrays.item_ids.ids[j]) for j in np.argsort(d, kind="stable")[:5]]
        assert got == expected
        for it in body["items"]:
            j = loaded.arrays.item_ids.row(it["item_id"])
            assert it["distance"] == pytest.approx(float(d[j]), rel=1e-4, abs=1e-6)
            assert it["score"] == pytest.approx(1 / (1 + np.exp(it["distance"])), rel=1e-9)
        same_block += sum(block(i) == block(item) for i in got)
    assert same_block >= 16  # of 20; chance is about 5


def test_unknown_item_is_404_and_bounds_are_422(client: TestClient, loaded: LoadedArtifact) -> None:
    body = assert_error(client.get("/items/no-such-item/similar"), 404, "unknown_item")
    assert "no-such-item" in body["error"]["message"]
    assert_error(client.get("/items/a%2Fb/similar"), 404, "unknown_item")  # '/' reaches lookup
    item = str(loaded.arrays.item_ids.ids[0])
    for params in ({"k": 0}, {"k": 501}, {"k": "ten"}):
        assert_error(client.get(f"/items/{item}/similar", params=params), 422, "invalid_input")
    assert_error(client.get("/items/a%01b/similar"), 422, "invalid_input")
    assert_error(client.get("/items/" + "x" * 129 + "/similar"), 422, "invalid_input")
    everything = client.get(f"/items/{item}/similar", params={"k": 500}).json()["items"]
    assert len(everything) == loaded.n_items - 1  # k beyond the catalogue: every other item
