"""bench/tune_als.py selects on validation, then scores the test part: quick mode end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tune_als_selects_on_validation_and_reports_test(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "bench/tune_als.py", "--quick", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((tmp_path / "tune_als.json").read_text())
    assert len(doc["grid"]) == 8  # 2 factors x 2 regularisations x 2 alphas
    best = max(doc["grid"], key=lambda row: row["valid_ndcg"])
    assert doc["selected"] == {k: best[k] for k in ("factors", "regularization", "alpha")}
    assert all(0.0 <= row["valid_ndcg"] <= 1.0 for row in doc["grid"])
    assert set(doc["test_ndcg"]) == {"default", "tuned"}
    assert all(len(v) == len(doc["seeds"]) == 1 for v in doc["test_ndcg"].values())
    assert "tuned" in done.stdout and "test ndcg@10" in done.stdout
