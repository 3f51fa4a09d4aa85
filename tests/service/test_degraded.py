"""Redis down or full: the API stays alive, says it is not ready, degrades reads as documented
and refuses writes with 503 in the error shape; it recovers without a restart.

Documented behaviour (service/recommender.py, docs/deploy.md): with the history store down,
GET /recommend answers from the artifact alone (`source: "training_only"`: trained users from
their trained vector and training history, others the popular items). A full Redis
(maxmemory, noeviction) still serves reads, so recommendations keep the posted history; only
writes, and readiness, fail.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from service.app import create_app
from service.loader import LoadedArtifact
from tests.service.conftest import assert_error, make_settings

pytestmark = pytest.mark.timeout(60)


def _post(c: TestClient, user: str, item: str, eid: str) -> Any:
    return c.post("/interactions", json={"user_id": user, "item_id": item, "event_id": eid})


def _store_part(c: TestClient) -> dict[str, Any]:
    body = assert_error(c.get("/readyz"), 503, "not_ready")
    parts = {p["part"]: p for p in body["error"]["details"]}
    assert parts["artifact"]["ready"] is True
    assert parts["store"]["ready"] is False
    return dict(parts["store"])


def test_redis_down_serves_training_only_and_refuses_writes(
    deploy_redis: Any, tiny_artifact_dir: Path, loaded: LoadedArtifact
) -> None:
    trained_user = str(loaded.arrays.user_ids.ids[0])  # in the artifact's training data
    proc, port = deploy_redis.start("down")
    url = f"redis://:{deploy_redis.password}@127.0.0.1:{port}/0"
    with TestClient(create_app(make_settings(tiny_artifact_dir, url))) as c:
        trained = c.get(f"/recommend/{trained_user}", params={"k": 5}).json()
        assert trained["source"] == "personalized"
        item = trained["items"][0]["item_id"]
        assert _post(c, "newcomer", item, "e1").status_code == 200
        assert c.get("/recommend/newcomer").json()["source"] == "history"
        popular = c.get("/recommend/nobody", params={"k": 5}).json()

        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert c.get("/healthz").status_code == 200
        _store_part(c)
        degraded = c.get(f"/recommend/{trained_user}", params={"k": 5})
        assert degraded.status_code == 200
        assert degraded.json()["source"] == "training_only"
        assert degraded.json()["items"] == trained["items"]  # trained users lose nothing
        newcomer = c.get("/recommend/newcomer", params={"k": 5}).json()
        assert newcomer["source"] == "training_only"  # its posted history is out of reach
        assert newcomer["items"] == popular["items"]
        r = _post(c, "newcomer", item, "e2")
        assert_error(r, 503, "store_unavailable")
        assert r.headers["retry-after"].isdigit()
        batch = c.post("/interactions", json={"interactions": [{"user_id": "a", "item_id": item}]})
        assert_error(batch, 503, "store_unavailable")

        deploy_redis.start("down", port)  # back, same data: no restart of the API
        assert c.get("/readyz").status_code == 200
        assert c.get("/recommend/newcomer").json()["source"] == "history"
        assert _post(c, "newcomer", item, "e2").json()["duplicates"] == 0
        assert _post(c, "newcomer", item, "e1").json()["duplicates"] == 1  # survived the kill


def test_redis_full_refuses_writes_but_serves_reads(
    deploy_redis: Any, tiny_artifact_dir: Path, loaded: LoadedArtifact
) -> None:
    trained_user = str(loaded.arrays.user_ids.ids[0])
    _, port = deploy_redis.start("full")
    url = f"redis://:{deploy_redis.password}@127.0.0.1:{port}/0"
    admin = redis.Redis.from_url(url, decode_responses=True)
    with TestClient(create_app(make_settings(tiny_artifact_dir, url))) as c:
        item = c.get(f"/recommend/{trained_user}").json()["items"][0]["item_id"]
        assert _post(c, "newcomer", item, "e1").status_code == 200
        try:
            admin.config_set("maxmemory", 1)  # as if full (noeviction, from deploy/redis.conf)
            assert c.get("/healthz").status_code == 200
            assert "maxmemory" in _store_part(c)["detail"]
            r = _post(c, "newcomer", item, "e2")
            body = assert_error(r, 503, "store_unavailable")
            assert "maxmemory" in body["error"]["message"]
            assert "retry-after" in r.headers
            reads = c.get("/recommend/newcomer")
            assert reads.status_code == 200 and reads.json()["source"] == "history"
            assert c.get(f"/recommend/{trained_user}").json()["source"] == "personalized"
        finally:
            admin.config_set("maxmemory", "512mb")
        assert c.get("/readyz").status_code == 200
        assert _post(c, "newcomer", item, "e2").json()["duplicates"] == 0  # the retry, once
        assert admin.lrange("relrec:{newcomer}:hist", 0, -1) == [item, item]
        assert admin.xlen("relrec:log") == 2
    admin.close()
