"""Cold-start protocol: items held out of training entirely, placed by their text.

Planted data: each item's text names its block's topic (`write_item_text`), so the learned
text projection can put a never-seen item among its block, where random or popular placement
cannot. Trained with the hashing encoder, which needs no download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.filters import binarize, k_core
from training.interactions import DataError
from training.synthetic import planted_interactions, write_item_text
from training.text.cold_start import (
    cold_start_report,
    hold_out_items,
    placement_vectors,
    warm_report_with_new_items,
)
from training.text.readers import read_item_text

SPEC = {"n_users": 240, "n_items": 120, "n_communities": 4, "items_per_user": 24,
        "noise": 0.05, "seed": 0}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("cold")
    raw = planted_interactions(**SPEC)
    text_path = write_item_text(raw, folder / "items.csv")
    return k_core(binarize(raw, 4.0), 5), text_path, folder


@pytest.fixture(scope="module")
def trained(planted):
    """HLR with item text on the warm log of a 10% hold-out (seconds)."""
    from training.config import load_config
    from training.pipeline import fit_model

    inter, text_path, folder = planted
    cold = hold_out_items(inter, read_item_text(text_path).item_ids, 0.1, seed=0)
    cfg = load_config(algorithm="hlr", data={"path": "planted", "k_core": 5},
                      model={"dim": 16, "n_memory": 4, "l_max": 8},
                      trainer={"epochs": 8, "batch_size": 256, "lr": 0.02, "progress": False,
                               "patience": 8},
                      text={"item_text": str(text_path), "encoder": "hashing",
                            "cache_dir": str(folder / "cache"), "align_weight": 0.5},
                      eval={"sampled": False})
    fit = fit_model(cfg, cold.split)
    return cold, fit.model, fit.text_items


def test_hold_out_removes_every_interaction_of_the_held_out_items(planted) -> None:
    inter, text_path, _ = planted
    cold = hold_out_items(inter, read_item_text(text_path).item_ids, 0.1, seed=3)
    assert len(cold.cold_ids) == round(0.1 * inter.n_items)
    for part in (cold.split.train, cold.split.valid, cold.split.test):
        assert not set(cold.cold_ids) & set(part.items.ids[part.item_rows].tolist())
    assert not set(cold.cold_ids) & set(cold.split.train.items.to_list())
    # every interaction the log had with a held-out item is a cold test pair
    on_cold = np.isin(inter.items.ids[inter.item_rows], cold.cold_ids)
    assert len(cold) == int(on_cold.sum()) > 0
    assert set(cold.cold_items.tolist()) <= set(cold.cold_ids)
    assert all(u in cold.split.train.users for u in cold.cold_users)
    # the same seed holds out the same items; another seed, others
    again = hold_out_items(inter, read_item_text(text_path).item_ids, 0.1, seed=3)
    other = hold_out_items(inter, read_item_text(text_path).item_ids, 0.1, seed=4)
    assert again.cold_ids == cold.cold_ids != other.cold_ids


def test_hold_out_draws_only_items_with_text_and_says_when_too_few(planted) -> None:
    inter, _, _ = planted
    some = inter.items.to_list()[:20]
    cold = hold_out_items(inter, some, 0.1, seed=0)
    assert set(cold.cold_ids) <= set(some)
    with pytest.raises(DataError, match="only 5 of 1.. items have text"):
        hold_out_items(inter, some[:5], 0.1, seed=0)
    with pytest.raises(DataError, match="fraction"):
        hold_out_items(inter, some, 1.5)


def test_text_placement_finds_new_items_that_random_and_popular_miss(trained) -> None:
    cold, model, text_items = trained
    recall = {}
    for how in ("text", "random", "popular"):
        vectors = placement_vectors(model, cold.split.train, cold.cold_ids, how, text_items)
        assert vectors.shape == (len(cold.cold_ids), model.config.dim)
        for catalogue in ("cold", "all"):
            report = cold_start_report(model, cold, vectors, catalogue, k=10)
            recall[how, catalogue] = report.means()["recall"]
            ndcg = report.means()["ndcg"]
            recall[how, catalogue, "ndcg"] = ndcg
    # Whole catalogue: placed by text, the new items reach the top 10 of the users who took
    # them; at a random item's or at the most popular item's place they rarely do.
    assert recall["text", "all"] > 0.5
    assert recall["text", "all"] > 3 * max(recall["random", "all"], recall["popular", "all"])
    # Among the new items only (12 of them, so recall@10 is high for anyone): text ranks the
    # user's block first, which shows in NDCG.
    assert recall["text", "cold", "ndcg"] > recall["random", "cold", "ndcg"] + 0.2
    assert recall["text", "cold", "ndcg"] > recall["popular", "cold", "ndcg"] + 0.2


def test_new_items_piled_on_the_popular_item_crowd_out_warm_items(trained) -> None:
    """The warm test with the new items in the catalogue: all of them on one popular point
    take top-10 slots from the warm items users did take; placed by text they land among their
    block, competing only where they belong."""
    cold, model, text_items = trained
    warm = {}
    for how in ("text", "popular"):
        vectors = placement_vectors(model, cold.split.train, cold.cold_ids, how, text_items)
        report = warm_report_with_new_items(model, cold, vectors, k=10)
        assert set(report.user_rows) <= set(range(cold.split.train.n_users))
        warm[how] = report.means()["recall"]
    assert 0.0 < warm["popular"] < warm["text"]


def test_text_placement_needs_the_runs_text_items(trained) -> None:
    cold, model, _ = trained
    with pytest.raises(DataError, match="--item-text"):
        placement_vectors(model, cold.split.train, cold.cold_ids, "text", None)
    with pytest.raises(DataError, match="unknown placement"):
        placement_vectors(model, cold.split.train, cold.cold_ids, "nearby")  # type: ignore[arg-type]


def test_popular_placement_sits_on_the_most_popular_item(trained) -> None:
    cold, model, _ = trained
    vectors = placement_vectors(model, cold.split.train, cold.cold_ids, "popular", seed=1)
    top = int(np.argmax(cold.split.train.item_popularity()))
    q = model.item_emb.weight.detach().numpy()[top]
    assert np.abs(vectors - q).max() < 1e-3
    assert len(np.unique(vectors.round(7), axis=0)) == len(vectors)  # ties broken


def test_bench_cold_start_quick_mode_runs(tmp_path: Path) -> None:
    """bench/cold_start.py --quick end to end, so the benchmark script cannot rot."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run([sys.executable, "bench/cold_start.py", "--quick", "--out",
                           str(tmp_path), "--table", str(tmp_path / "t.md")],
                          capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "seed0.json").read_text())
    assert set(doc["cold"]) == {f"{p}/{c}" for p in ("text", "random", "popular")
                                for c in ("cold", "all")}
    assert set(doc["warm_with_new"]) == {"text", "random", "popular"}
    table = (tmp_path / "t.md").read_text()
    assert "| text | whole catalogue |" in table and "12 of 120 items held out" in table
