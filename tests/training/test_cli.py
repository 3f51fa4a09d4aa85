"""`relrec train` end to end on a written sample: metrics.json shape, tables, clear errors."""

import json
from pathlib import Path

import pytest

from service.cli import main

METRIC_KEYS = {"precision", "recall", "ndcg", "map", "mrr", "median_popularity"}


@pytest.mark.parametrize("model", ["pop", "als", "ease"])
def test_train_baseline_writes_metrics(sample_csv: Path, tmp_path: Path, model: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / model
    assert main(["train", "--data", str(sample_csv), "--model", model, "--k-core", "5",
                 "--out", str(out)]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["model"] == model and doc["split"] == "per-user"
    assert doc["protocol"] == "full" and doc["k"] == 10
    assert set(doc["metrics"]) == METRIC_KEYS
    assert set(doc["sampled"]) >= {"hr", "ndcg"}
    printed = capsys.readouterr().out
    assert "full ranking @10" in printed and "sampled protocol" in printed


def test_train_relational_writes_a_run(sample_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "lrml"
    assert main(["train", "--data", str(sample_csv), "--model", "lrml", "--k-core", "5",
                 "--dim", "8", "--n-memory", "4", "--epochs", "2", "--batch-size", "256",
                 "--no-progress", "--out", str(out)]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["model"] == "lrml" and doc["training"]["epochs"] == 2
    assert (out / "model.pt").is_file() and (out / "config.json").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["dim"] == 8 and cfg["model"]["n_memory"] == 4


def test_train_export_to_publishes_a_version(sample_csv: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`relrec train --export-to A` leaves the run and makes its export current in A."""
    from models.artifact import read_manifest, resolve_current

    out, artifacts = tmp_path / "run", tmp_path / "artifacts"
    assert main(["train", "--data", str(sample_csv), "--model", "als", "--k-core", "5",
                 "--out", str(out), "--export-to", str(artifacts)]) == 0
    assert (out / "baseline.npz").is_file() and (out / "metrics.json").is_file()
    manifest = read_manifest(resolve_current(artifacts))
    assert manifest.kind == "als" and manifest.metrics["model"] == "als"
    assert f"exported {resolve_current(artifacts)}" in capsys.readouterr().out


def test_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.csv"
    assert main(["train", "--data", str(missing), "--model", "pop", "--out",
                 str(tmp_path / "o")]) == 2
    assert str(missing) in capsys.readouterr().err


def test_filter_that_empties_the_data_is_named(sample_csv: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(sample_csv), "--model", "pop", "--k-core", "500",
                 "--out", str(tmp_path / "o")]) == 2
    assert "k-core" in capsys.readouterr().err


def test_unknown_override_is_refused(sample_csv: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(sample_csv), "--model", "hlr", "--set",
                 "trainer.learning_rate=1", "--out", str(tmp_path / "o")]) == 2
    assert "trainer.learning_rate" in capsys.readouterr().err


def test_export_of_a_missing_run_is_a_clear_error(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "no-run"), "--out", str(tmp_path / "a")]) == 2
    assert "no-run" in capsys.readouterr().err
    assert not (tmp_path / "a" / "current").exists()


@pytest.mark.parametrize("model", ["ease", "cml"])
def test_topk_out_writes_the_test_users_lists_in_raw_ids(sample_csv: Path, tmp_path: Path,
                                                         model: str) -> None:
    """Issue 15: an outside evaluator re-scores a run from the lists alone."""
    import csv

    from training.config import load_config
    from training.pipeline import prepare

    path = tmp_path / "top.csv"
    assert main(["train", "--data", str(sample_csv), "--model", model, "--k-core", "5",
                 "--epochs", "1", "--no-progress", "--topk-out", str(path),
                 "--out", str(tmp_path / "run")]) == 0
    rows = list(csv.DictReader(path.open()))
    split = prepare(load_config(None, [], algorithm=model,
                                data={"path": str(sample_csv), "k_core": 5}))
    users, items = split.train.users, split.train.items
    known = {(users.ids[u], items.ids[i]) for part in (split.train, split.valid)
             for u, i in zip(part.user_rows, part.item_rows, strict=True)}
    test = {(users.ids[u], items.ids[i]) for u, i in zip(split.test.user_rows,
                                                           split.test.item_rows, strict=True)}
    by_user: dict[str, list[tuple[int, str]]] = {}
    for r in rows:
        by_user.setdefault(r["user"], []).append((int(r["rank"]), r["item"]))
    assert set(by_user) == {u for u, _ in test}  # every test user, raw ids
    assert all(sorted(r for r, _ in v) == list(range(1, 11)) for v in by_user.values())
    assert not {(r["user"], r["item"]) for r in rows} & known  # the exclusion rule holds
    # re-scored from the file: precision@10 equals the run's own
    hits = sum((r["user"], r["item"]) in test for r in rows)
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert hits / (10 * len(by_user)) == pytest.approx(doc["metrics"]["precision"], abs=1e-9)


def test_final_refuses_an_unservable_baseline(sample_csv: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(sample_csv), "--model", "ease", "--final",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "evaluation baseline" in err
