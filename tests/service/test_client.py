"""The typed client (service/client.py), sync and async, against the real app and the tiny
artifact on both history stores: every endpoint, and errors as one exception type.
Test issue #22.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.client import AsyncRelrecClient, Interaction, RelrecApiError, RelrecClient
from service.loader import LoadedArtifact
from tests.service.conftest import make_settings, running

KEYS = {"read_api_keys": "r-key", "api_keys": "w-key", "admin_api_keys": "a-key"}


def test_sync_client_covers_every_endpoint(
    tiny_artifact_dir: Path, history_url: str, loaded: LoadedArtifact
) -> None:
    items = [str(x) for x in loaded.arrays.item_ids.ids[:3]]
    trained = str(loaded.arrays.user_ids.ids[0])
    app = create_app(make_settings(tiny_artifact_dir, history_url, **KEYS))
    with TestClient(app) as http:
        read = RelrecClient(client=http, api_key="r-key")
        write = RelrecClient(client=http, api_key="w-key")
        admin = RelrecClient(client=http, api_key="a-key")
        posted = write.post_interactions([Interaction("new/1", i, event_id=i) for i in items])
        assert posted.accepted == 3 and posted.duplicates == 0
        one = write.post_interactions(Interaction("new/1", items[0], type="negative"))
        assert one.accepted == 1
        rec = read.recommend("new/1", k=5, exclude=["ghost"], explain=True)
        assert rec.user_id == "new/1" and rec.source == "history" and len(rec.items) == 5
        assert not {it.item_id for it in rec.items} & set(items)
        assert [u.item_id for u in rec.unknown_ids] == ["ghost"]
        assert all(it.because is not None for it in rec.items)
        batch = read.recommend_batch([trained, "new/1"], k=4, offset=1)
        assert [r.user_id for r in batch.results] == [trained, "new/1"]
        assert [it.item_id for it in batch.results[0].items] == [
            it.item_id for it in read.recommend(trained, k=5).items[1:]
        ]
        similar = read.similar(items[1], k=3)
        assert similar.item_id == items[1] and len(similar.items) == 3
        assert read.model().version == loaded.version
        assert read.ready().status == "ready"
        assert admin.reload().changed is False
        erased = write.erase_user("new/1")
        assert (erased.history_removed, erased.log_removed) == (3, 4)
        hidden = admin.delete_item(items[2])
        assert hidden.item_id == items[2] and hidden.hidden
        assert items[2] not in {it.item_id for it in read.recommend("nobody", k=50).items}
        restored = admin.restore_item(items[2])
        assert restored.item_id == items[2] and not restored.hidden
        assert items[2] in {it.item_id for it in read.recommend("nobody", k=50).items}
        with pytest.raises(RelrecApiError) as err:
            admin.put_item("brand/new", "jazz saxophone")  # the tiny HLR has no item text
        assert (err.value.status, err.value.code) == (409, "no_text_projection")
        with pytest.raises(RelrecApiError) as err:
            read.similar("no-such-item")
        assert (err.value.status, err.value.code) == (404, "unknown_item")
        assert err.value.request_id and "no-such-item" in err.value.message
        with pytest.raises(RelrecApiError) as err:
            write.recommend(trained)  # a write key does not read
        assert (err.value.status, err.value.code) == (401, "unauthorized")
        with pytest.raises(RelrecApiError) as err:
            read.recommend(trained, k=0)
        assert (err.value.status, err.value.code) == (422, "invalid_input")


def test_async_client_covers_every_endpoint(
    tiny_artifact_dir: Path, sqlite_url: str, loaded: LoadedArtifact
) -> None:
    items = [str(x) for x in loaded.arrays.item_ids.ids[:2]]
    app = create_app(make_settings(tiny_artifact_dir, sqlite_url))

    async def main() -> None:
        async with running(app) as http, AsyncRelrecClient(client=http) as relrec:
            assert (await relrec.post_interactions([Interaction("a", i) for i in items])).accepted
            recs = await asyncio.gather(*(relrec.recommend(u, k=3) for u in ("a", "b", "a")))
            assert [r.source for r in recs] == ["history", "popular", "history"]
            batch = await relrec.recommend_batch(["a", "b"], k=3)
            assert [[i.item_id for i in r.items] for r in batch.results] == [
                [i.item_id for i in r.items] for r in recs[:2]
            ]
            assert len((await relrec.similar(items[0], k=2)).items) == 2
            assert (await relrec.model()).kind == "hlr"
            assert (await relrec.ready()).status == "ready"
            assert (await relrec.reload(force=True)).changed is True
            assert (await relrec.erase_user("a")).history_removed == 2
            assert (await relrec.delete_item(items[1])).hidden
            assert not (await relrec.restore_item(items[1])).hidden
            with pytest.raises(RelrecApiError) as err:
                await relrec.put_item(items[0], "a trained item")
            assert (err.value.status, err.value.code) == (409, "item_exists")
            with pytest.raises(RelrecApiError) as err:
                await relrec.recommend_batch([], k=3)
            assert err.value.status == 422 and err.value.details

    asyncio.run(main())
