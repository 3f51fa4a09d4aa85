"""bench/tune_als.py selects on validation, then scores the test part: quick mode end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "bench/tune_als.py", "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_tune_als_selects_on_validation_and_reports_test(tmp_path: Path) -> None:
    done = _run(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((tmp_path / "tune_als.json").read_text())
    als = [row for row in doc["grid"] if row["model"] == "als"]
    ease = [row for row in doc["grid"] if row["model"] == "ease"]
    assert len(als) == 8 and len(ease) == 2  # 2 factors x 2 regularisations x 2 alphas; 2 λ
    best = max(als, key=lambda row: row["valid_ndcg"])
    assert doc["selected"] == {k: best[k] for k in ("factors", "regularization", "alpha")}
    assert doc["ease_selected"] == {"l2": max(ease, key=lambda r: r["valid_ndcg"])["l2"]}
    assert all(0.0 <= row["valid_ndcg"] <= 1.0 for row in doc["grid"])
    assert set(doc["test_ndcg"]) == {"pop", "weak", "shipped", "tuned", "ease"}
    assert all(len(v) == len(doc["seeds"]) == 1 for v in doc["test_ndcg"].values())
    # confidence 1 (the old default) is far below a positive weighted 1 + α on planted data
    assert doc["test_ndcg"]["tuned"][0] > doc["test_ndcg"]["weak"][0] + 0.1
    assert "tuned" in done.stdout and "test ndcg@10" in done.stdout


def test_tune_als_resumes_from_its_logs(tmp_path: Path) -> None:
    assert _run(tmp_path).returncode == 0
    lines = (tmp_path / "grid.jsonl").read_text().splitlines()
    again = _run(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "grid.jsonl").read_text().splitlines() == lines  # nothing refit
