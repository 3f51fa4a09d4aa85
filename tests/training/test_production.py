"""Production runs (issue 16): `relrec train --final` selects on validation, refits on every
interaction and the whole catalogue, and the exported artifact never serves back an item the
user is known to have had; a run that is not refit still exports every split as history."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from models import artifact as art
from models.artifact_arrays import read_arrays, user_history
from service.app import create_app
from service.cli import main
from tests.service.conftest import make_settings


@pytest.fixture(scope="module")
def log_with_rare_items(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A planted log plus items with one or two positives (and one rated below the
    threshold), which the 5-core of the selection run drops."""
    from training.synthetic import write_sample

    root = tmp_path_factory.mktemp("final")
    path = write_sample(root / "base.csv", n_users=240, n_items=120, n_communities=4,
                        items_per_user=24, seed=0)
    frame = pd.read_csv(path, dtype={"user": str, "item": str})
    users = frame["user"].unique()
    rare = pd.DataFrame({
        "user": [users[0], users[1], users[1], users[2], users[3]],
        "item": ["rare-a", "rare-a", "rare-b", "rare-c", "disliked"],
        "rating": [5, 4, 5, 4, 1],
        "timestamp": [2_000_000_000] * 5,
    })
    frame = pd.concat([frame, rare], ignore_index=True)
    frame.to_csv(path, index=False)
    return path, frame


@pytest.fixture(scope="module")
def final_artifact(log_with_rare_items: tuple[Path, pd.DataFrame],
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = log_with_rare_items
    root = tmp_path_factory.mktemp("final-run")
    assert main(["train", "--data", str(path), "--model", "hlr", "--k-core", "5", "--dim", "16",
                 "--n-memory", "4", "--l-max", "8", "--epochs", "3", "--patience", "3",
                 "--batch-size", "256", "--lr", "0.01", "--no-progress", "--set",
                 "eval.sampled=false", "--final", "--out", str(root / "run")]) == 0
    assert main(["export", str(root / "run"), "--out", str(root / "artifacts")]) == 0
    return root / "artifacts"


def test_final_run_records_the_selection_and_the_refit(final_artifact: Path) -> None:
    manifest = art.read_manifest(art.resolve_current(final_artifact))
    assert manifest.training is not None
    assert manifest.training.refit and manifest.training.history == "all"
    assert 1 <= (manifest.training.epochs or 0) <= 3
    assert set(manifest.training.selection_metrics) >= {"ndcg", "recall"}
    assert manifest.fold_in is not None and manifest.fold_in.method == "hinge"


def test_every_item_with_a_positive_is_servable(
    final_artifact: Path, log_with_rare_items: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    _, frame = log_with_rare_items
    positives = frame[frame["rating"] >= 4]
    arrays = read_arrays(art.resolve_current(final_artifact))
    assert set(arrays.item_ids.to_list()) == set(positives["item"])
    assert set(arrays.user_ids.to_list()) == set(positives["user"])
    assert "disliked" not in arrays.item_ids
    settings = make_settings(final_artifact, f"sqlite:///{tmp_path / 'h.db'}")
    with TestClient(create_app(settings)) as client:
        batch = [{"user_id": "probe", "item_id": i} for i in ["rare-a", "rare-b", "rare-c"]]
        body = client.post("/interactions", json={"interactions": batch}).json()
        assert body["accepted"] == 3 and body["unknown_items"] == [] and body["rejected"] == []
        # the rare items are recommendable: a user who had rare-a is offered the others
        served = set()
        for user in positives["user"].unique():
            served |= {x["item_id"] for x in client.get(f"/recommend/{user}?k=100").json()["items"]}
        assert {"rare-b", "rare-c"} & served


def test_no_served_list_holds_a_known_item(
    final_artifact: Path, log_with_rare_items: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    """Test issue 16: every split's items are the user's history, none is served back."""
    _, frame = log_with_rare_items
    positives = frame[frame["rating"] >= 4]
    known = positives.groupby("user")["item"].apply(set).to_dict()
    settings = make_settings(final_artifact, f"sqlite:///{tmp_path / 'h.db'}")
    with TestClient(create_app(settings)) as client:
        for user, items in known.items():
            r = client.get(f"/recommend/{user}", params={"k": 20})
            body = r.json()
            assert r.status_code == 200 and body["source"] == "personalized"
            served = {x["item_id"] for x in body["items"]}
            assert len(served) == 20 and not served & items, user


def test_final_is_refused_cleanly_for_bad_min_item_interactions(
    log_with_rare_items: tuple[Path, pd.DataFrame], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, _ = log_with_rare_items
    assert main(["train", "--data", str(path), "--model", "pop", "--final",
                 "--min-item-interactions", "0", "--out", str(tmp_path / "o")]) == 2
    assert "min_item_interactions" in capsys.readouterr().err


def test_pop_final_keeps_the_whole_catalogue(
    log_with_rare_items: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    path, frame = log_with_rare_items
    assert main(["train", "--data", str(path), "--model", "pop", "--k-core", "5", "--final",
                 "--min-item-interactions", "2", "--out", str(tmp_path / "run")]) == 0
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert doc["final"]["refit"] and doc["final"]["min_item_interactions"] == 2
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "a")]) == 0
    arrays = read_arrays(art.resolve_current(tmp_path / "a"))
    assert "rare-a" in arrays.item_ids and "rare-b" not in arrays.item_ids


def test_a_run_that_is_not_refit_exports_every_split_as_history(
    tiny_artifact_dir: Path, planted_split: object
) -> None:
    vdir = art.resolve_current(tiny_artifact_dir)
    arrays = read_arrays(vdir)
    split = planted_split
    for user_row in range(0, split.train.n_users, 17):  # type: ignore[attr-defined]
        want = set()
        for part in (split.train, split.valid, split.test):  # type: ignore[attr-defined]
            want |= set(part.item_rows[part.user_rows == user_row].tolist())
        assert set(user_history(arrays, user_row).tolist()) == want
    manifest = art.read_manifest(vdir)
    assert manifest.training is not None and not manifest.training.refit
    assert manifest.training.history == "all"
    assert np.all(np.diff(arrays.history_indptr) >= 0)
