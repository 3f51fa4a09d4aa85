"""The main job: selection by validation loss (the reference's criterion) and the run files."""

import json
import math
from pathlib import Path

import pytest

from training.config import load_config
from training.pipeline import run
from training.run_dir import load_run


def test_select_by_validation_loss(planted_split, tmp_path: Path) -> None:
    cfg = load_config(algorithm="lrml", data={"path": "planted"},
                      model={"dim": 8, "n_memory": 4},
                      trainer={"epochs": 2, "batch_size": 256, "select_by": "loss",
                               "progress": False},
                      eval={"sampled": False})
    result = run(cfg, tmp_path, split=planted_split)
    training = result.metrics["training"]
    assert training["select_by"] == "loss"
    assert math.isfinite(training["best_valid"]) and training["best_valid"] <= 0  # −loss
    curve = training["curve"]
    assert [e["epoch"] for e in curve] == [1, 2]
    assert max(e["valid"] for e in curve) == pytest.approx(training["best_valid"], abs=1e-6)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["metrics"] == result.metrics["metrics"]
    restored = load_run(tmp_path)
    assert restored.model.kind == "lrml" and restored.model.n_items == planted_split.n_items


def test_quality_bench_quick_mode_runs(tmp_path: Path) -> None:
    """bench/quality.py --quick: every algorithm through the pipeline, so the script can't rot."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(root / "bench" / "quality.py"), "--quick",
                           "--out", str(tmp_path), "--table", str(tmp_path / "t.md")],
                          capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = (tmp_path / "t.md").read_text()
    for algo in ("pop", "als", "ease", "cml", "lrml", "hlr", "hlr++", "adacml"):
        assert f"| {algo} |" in table


def test_quality_bench_reports_the_sampled_protocol_at_k(tmp_path: Path) -> None:
    """--sampled --k 5 (the SERML paper's H@5/NDCG@5): the sampled columns come first, marked."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(root / "bench" / "quality.py"), "--quick",
                           "--models", "pop", "lrml", "--k", "5", "--sampled",
                           "--split", "leave-one-out", "--out", str(tmp_path),
                           "--table", str(tmp_path / "t.md")],
                          capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    header, _, *rows = (tmp_path / "t.md").read_text().splitlines()
    assert header.startswith("| model | seeds | HR@5 sampled | NDCG@5 sampled | precision@5 |")
    for row, algo in zip(rows, ("pop", "lrml"), strict=False):
        hr, ndcg = (float(c) for c in row.split("|")[3:5])
        assert row.startswith(f"| {algo} |") and 0.0 <= ndcg <= hr <= 1.0
    saved = json.loads((tmp_path / "lrml-s0" / "metrics.json").read_text())
    assert saved["k"] == 5 and saved["sampled"]["n_negatives"] == 100


def test_training_exports_directly_what_export_run_exports_from_the_directory(
        planted_split, tmp_path: Path) -> None:
    """Issue 17: `run(..., export_to=…)` exports the in-memory run; reading the saved run back
    (`relrec export RUN`) gives the same tables, histories, popularity and manifest record."""
    import numpy as np

    from models import artifact as art
    from models.artifact_arrays import read_arrays
    from training.exporter import export_run

    cfg = load_config(algorithm="hlr", data={"path": "planted"},
                      model={"dim": 8, "n_memory": 4, "l_max": 6},
                      trainer={"epochs": 1, "batch_size": 256, "progress": False},
                      eval={"sampled": False})
    result = run(cfg, tmp_path / "run", split=planted_split, export_to=tmp_path / "a")
    assert result.version_dir is not None
    assert art.resolve_current(tmp_path / "a") == result.version_dir.resolve()
    later = export_run(tmp_path / "run", tmp_path / "b")
    direct, reread = read_arrays(result.version_dir), read_arrays(later)
    for name in ("users", "items", "keys", "memories", "popularity", "history_indptr",
                 "history_items"):
        np.testing.assert_array_equal(getattr(direct, name), getattr(reread, name), name)
    assert direct.item_ids.to_list() == reread.item_ids.to_list()
    first, second = art.read_manifest(result.version_dir), art.read_manifest(later)
    assert first.training == second.training and first.training.history == "all"
    assert first.config == second.config == cfg.model_dump(mode="json")
    assert first.counts == second.counts and first.metrics == second.metrics
    # every split is in the exported history, not the training part alone (issue 16)
    assert int(direct.history_indptr[-1]) > len(np.unique(
        planted_split.train.user_rows * planted_split.n_items + planted_split.train.item_rows))


def test_export_to_refuses_an_evaluation_baseline(planted_split, tmp_path: Path) -> None:
    from training.config import ConfigError

    cfg = load_config(algorithm="ease", data={"path": "planted"}, eval={"sampled": False})
    with pytest.raises(ConfigError, match="--export-to: ease is an evaluation baseline"):
        run(cfg, tmp_path / "run", split=planted_split, export_to=tmp_path / "a")
    assert not (tmp_path / "a").exists()
