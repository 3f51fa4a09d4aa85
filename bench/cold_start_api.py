"""Cold-start items through the API (issue 20): held-out items PUT with their text, served.

The other half of `bench/cold_start.py`: the model trained there (held-out items never seen)
is exported *without* the held-out items, served by the real app (`create_app`, SQLite
history, in-process through Starlette's TestClient), and every held-out item is PUT to
`/items/{id}` with its text, so the service places it with the artifact's exported text model
(ONNX encoder and projection, no torch). Then, for the users who interacted with held-out
items, Recall@10 of those interactions: `GET /recommend/{user}?k=10` (the whole catalogue) and
`POST /recommend` with `candidates` = the held-out items (which new item to whom). The
baselines go through the same serving path with the placement swapped: the held-out items
placed at a random trained item's vector, or at the most popular one's (jittered), installed
as the engine's item catalogue directly, since PUT only takes text.

Seen items are the users' train and validation items (the artifact's history), as in the
offline protocol; users the artifact does not know (dropped by the k-core) are left out.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from models.base import RelationalModel
from training.interactions import Interactions
from training.run_dir import TextItems
from training.text.cold_start import ColdStartSplit

__all__ = ["api_report"]

BATCH = 64  # users per POST /recommend (RELREC_MAX_RECOMMEND_USERS by default)


def api_report(model: RelationalModel, cold: ColdStartSplit, text_items: TextItems,
               texts: dict[str, str], placements: dict[str, np.ndarray], k: int,
               out: Path) -> dict[str, Any]:
    """Recall@k through the API per placement ("text" by PUT; the others installed) and
    catalogue ("cold": the held-out items only; "all": the whole catalogue)."""
    artifacts = _export_without(model, cold, text_items, out / "artifacts")
    return measure(artifacts, cold, texts, placements, k, out)


def measure(artifacts: Path, cold: ColdStartSplit, texts: dict[str, str],
            placements: dict[str, np.ndarray], k: int, out: Path) -> dict[str, Any]:
    """`api_report` on an exported artifact (without the held-out items): serve, PUT, rank."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.item_catalogue import Catalogue
    from service.settings import Settings

    (out / "api-history.db").unlink(missing_ok=True)  # a fresh store: nothing PUT before
    settings = Settings(_env_file=None, artifact_dir=artifacts,  # type: ignore[call-arg]
                        history_url=f"sqlite:///{out / 'api-history.db'}", reload_poll_s=0.0,
                        ort_threads=1, faiss_threads=1, max_k=max(100, k))
    truth = _truth(cold)
    doc: dict[str, Any] = {"recall": {}}
    with TestClient(create_app(settings)) as client:
        known = set(client.app.state.runtime.versions.current.artifact.arrays.user_ids.ids)
        users = [u for u in truth if u in known]
        doc["users"], doc["users_unknown"] = len(users), len(truth) - len(users)
        started = time.perf_counter()
        for item in cold.cold_ids:
            r = client.put(f"/items/{quote(item, safe='')}", json={"text": texts[item]})
            if r.status_code != 201:
                raise RuntimeError(f"PUT /items/{item}: {r.status_code} {r.text}")
        doc["put_ms_per_item"] = 1000 * (time.perf_counter() - started) / len(cold.cold_ids)
        engine = client.app.state.runtime.versions.current
        placed = engine.catalogue.vectors[[engine.catalogue.ids.index(i) for i in cold.cold_ids]]
        # Text-only items an artifact was exported with are hidden: the offline catalogue.
        hidden = frozenset(_text_only_ids(engine.artifact))
        doc["hidden_text_only"] = len(hidden)
        text = Catalogue(engine.catalogue.placer, engine.catalogue.vector_session,
                         tuple(cold.cold_ids), placed, hidden)
        if placements["text"].shape == placed.shape:  # the offline projection, when given
            doc["text_vs_offline_max_abs"] = float(np.abs(placed - placements["text"]).max())
        for how in placements:
            _install(client, text if how == "text" else Catalogue(
                text.placer, text.vector_session, tuple(cold.cold_ids), placements[how],
                hidden))
            for catalogue in ("cold", "all"):
                doc["recall"][f"{how}/{catalogue}"] = _recall(client, users, truth, cold, k,
                                                              catalogue)
    return doc


def artifact_placements(artifacts: Path, cold_ids: Sequence[str], seed: int
                        ) -> dict[str, np.ndarray]:
    """The random and popular placements of `training.text.cold_start.placement_vectors`,
    drawn the same way from an exported artifact's trained rows (to re-measure without
    retraining; `--api-artifacts`)."""
    from models.artifact import read_manifest, resolve_version_dir
    from models.artifact_arrays import read_arrays

    vdir = resolve_version_dir(artifacts)
    manifest, arrays = read_manifest(vdir), read_arrays(vdir)
    info = manifest.text_items
    trained = info.first_row if info is not None else len(arrays.items)
    q = arrays.items[:trained]
    rng = np.random.default_rng(seed)
    random = q[rng.integers(0, len(q), len(cold_ids))]
    rng = np.random.default_rng(seed)
    top = int(np.argmax(arrays.popularity[:trained]))
    popular = (q[top] + rng.normal(0.0, 1e-4, (len(cold_ids), q.shape[1]))).astype(np.float32)
    return {"random": random, "popular": popular}


def _export_without(model: RelationalModel, cold: ColdStartSplit, text_items: TextItems,
                    root: Path) -> Path:
    """Export the model with its text model and no text-only item: the catalogue is the
    offline protocol's (the warm items, then the held-out ones PUT), not the thousands of
    movies with a title and no interaction left; train + validation as the seen history."""
    from training.exporter import export

    kept = TextItems([], text_items.vectors[:0], text_items.encoder,
                     text_items.projection_weight, text_items.projection_bias)
    train, valid = cold.split.train, cold.split.valid
    stamps = (None if train.timestamps is None or valid.timestamps is None
              else np.concatenate([train.timestamps, valid.timestamps]))
    known = Interactions(np.concatenate([train.user_rows, valid.user_rows]),
                         np.concatenate([train.item_rows, valid.item_rows]),
                         np.concatenate([train.weights, valid.weights]), stamps,
                         train.users, train.items)
    return export(model, train, root, text_items=kept, known=known, parity_check=False,
                  choose_retrieval=False).parent


def _text_only_ids(artifact: Any) -> list[str]:
    info = artifact.manifest.text_items
    ids = artifact.arrays.item_ids.to_list()
    return [] if info is None else ids[info.first_row:info.first_row + info.count]


def _truth(cold: ColdStartSplit) -> dict[str, set[str]]:
    truth: dict[str, set[str]] = {}
    for user, item in zip(cold.cold_users.tolist(), cold.cold_items.tolist(), strict=True):
        truth.setdefault(str(user), set()).add(str(item))
    return truth


def _install(client: Any, catalogue: Any) -> None:
    """Serve `catalogue` (placed vectors, no text) as the engine's items, in the app's loop."""
    runtime = client.app.state.runtime

    async def swap() -> None:
        await runtime.versions.update(lambda e: runtime.assemble(e.artifact, catalogue))

    client.portal.call(swap)


def _recall(client: Any, users: Sequence[str], truth: dict[str, set[str]],
            cold: ColdStartSplit, k: int, catalogue: str) -> float:
    """Mean over users of |top-k ∩ their held-out items| / |their held-out items|."""
    recalls = []
    for start in range(0, len(users), BATCH):
        chunk = list(users[start:start + BATCH])
        body: dict[str, Any] = {"users": chunk, "k": k}
        if catalogue == "cold":
            body["candidates"] = list(cold.cold_ids)
        r = client.post("/recommend", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"POST /recommend: {r.status_code} {r.text}")
        for user, result in zip(chunk, r.json()["results"], strict=True):
            top = {i["item_id"] for i in result["items"]}
            recalls.append(len(top & truth[user]) / len(truth[user]))
    return float(np.mean(recalls))
