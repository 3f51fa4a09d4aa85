"""`relrec report` (issue 19, part 4): one HTML file, figures embedded, what is missing said."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.cli import main

ROOT = Path(__file__).resolve().parents[2]
METRICS = ("precision", "recall", "ndcg", "map", "mrr")


def make_run(root: Path, name: str, model: str, ndcg: float, curve: bool = True,
             topk: list[str] | None = None, n_items: int = 10) -> Path:
    """A run directory with a fabricated metrics.json of known values."""
    run = root / name
    run.mkdir(parents=True)
    doc = {"model": model, "k": 10, "split": "per-user", "data": {"items": n_items},
           "metrics": dict.fromkeys(METRICS, ndcg) | {"median_popularity": 7.0},
           "spread": {m: {"std": 0.1, "ci95": 0.01, "n_users": 100} for m in METRICS},
           "training": {"best_epoch": 2, "epochs": 2,
                        "curve": [{"epoch": 1, "loss": 0.9, "valid": ndcg / 2, "time_s": 1.0},
                                  {"epoch": 2, "loss": 0.5, "valid": ndcg, "time_s": 1.0}]}
           if curve else {}}
    (run / "metrics.json").write_text(json.dumps(doc))
    if topk is not None:
        (run / "topk.csv").write_text("user,item,rank\n" + "".join(
            f"u{i},{item},{i + 1}\n" for i, item in enumerate(topk)))
        ids = [f"i{j}" for j in range(n_items)]
        (run / "item_ids.json").write_text(json.dumps(ids))
        rows = np.repeat(np.arange(n_items), np.arange(n_items, 0, -1))  # i0 most popular
        np.savez(run / "train.npz", user_rows=np.zeros_like(rows), item_rows=rows,
                 weights=np.ones(len(rows), dtype=np.float32))
    return run


def images(page: str) -> int:
    return page.count('src="data:image/png;base64,')


def test_report_embeds_curves_metrics_and_popularity(tmp_path: Path, capsys) -> None:
    runs = [make_run(tmp_path, "cml-s0", "cml", 0.20), make_run(tmp_path, "cml-s1", "cml", 0.22),
            make_run(tmp_path, "pop-s0", "pop", 0.10, curve=False)]
    out = tmp_path / "out" / "report.html"
    assert main(["report", *map(str, runs), "--out", str(out)]) == 0
    page = out.read_text()
    assert "report written to" in capsys.readouterr().out
    assert images(page) == 3  # curves, metrics, popularity; no coverage without top-k lists
    assert "<td>cml</td><td>2</td>" in page and "<td>pop</td><td>1</td>" in page
    # two seeds: mean and std across them; one run: its 95% CI over users
    assert f"0.2100 ± {np.std([0.20, 0.22], ddof=1):.4f}" in page
    assert "0.1000 ± 0.0100" in page
    assert "No training curve" in page and "pop-s0" in page
    assert "No top-k lists" in page
    assert "http" not in page.replace("http-equiv", "")  # self-contained


def test_report_coverage_and_long_tail_from_topk_lists(tmp_path: Path) -> None:
    from training.report import coverage, load_run, recommended_popularity

    run = make_run(tmp_path, "hlr-s0", "hlr", 0.3, topk=["i0", "i1", "i1", "i9"])
    info = load_run(run)
    assert coverage(info) == pytest.approx(3 / 10)
    assert list(recommended_popularity(info)) == [10, 9, 9, 1]
    out = tmp_path / "r.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    page = out.read_text()
    assert images(page) == 4  # + coverage
    assert "No top-k lists" not in page


def test_report_expands_a_folder_of_runs(tmp_path: Path) -> None:
    """A bench/quality.py --out (one subdirectory per model-seed) is one RUN argument."""
    for name, model in (("als-s0", "als"), ("hlr-s0", "hlr"), ("lrml-s0", "lrml")):
        make_run(tmp_path / "bench", name, model, 0.1, curve=model != "als")
    out = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "bench"), "--out", str(out)]) == 0
    page = out.read_text()
    assert "3 runs, 3 models" in page
    for model in ("als", "hlr", "lrml"):
        assert f"<td>{model}</td>" in page


@pytest.mark.parametrize("case", ["missing", "empty", "file", "bad-json", "not-metrics"])
def test_report_user_errors_are_one_line_exit_2(tmp_path: Path, capsys, case: str) -> None:
    run = tmp_path / "run"
    if case != "missing":
        run.mkdir()
    if case == "file":
        run = tmp_path / "run" / "x.txt"
        run.write_text("x")
    if case == "bad-json":
        (run / "metrics.json").write_text("{not json")
    if case == "not-metrics":
        (run / "metrics.json").write_text('{"hello": 1}')
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("relrec report: error: ") and err.count("\n") == 1
    assert str(run) in err
    assert not (tmp_path / "r.html").exists()


def test_parsing_imports_neither_torch_nor_matplotlib() -> None:
    code = ("import sys, training.cli; "
            "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_quality_bench_writes_a_report(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "quality.py"), "--quick",
                           "--models", "pop", "cml", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = (tmp_path / "report.html").read_text()
    assert images(page) == 4  # cml's curve, metrics, popularity, coverage (top-k lists kept)
    assert "<td>pop</td>" in page and "<td>cml</td>" in page
