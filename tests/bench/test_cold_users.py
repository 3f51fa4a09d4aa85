"""bench/cold_users.py end to end in quick mode: users removed before training, their first n
positives posted to a real `relrec serve`, every method scored on the same users (issue 16)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cold_users_quick_posts_through_the_api_and_scores_every_method(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "bench/cold_users.py", "--quick", "--ns", "1", "5", "--out",
         str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((tmp_path / "cold_users.json").read_text())
    assert doc["final"] and doc["counts"]["held_users"] == 40
    assert set(doc["rows"]) == {"relrec (fold-in)", "relrec (mean of items)", "most popular",
                                "ALS fold-in (recalculate_user)"}
    for row in doc["rows"].values():
        assert set(row) == {"1", "5"}
        assert all(0.0 <= cell["recall"] <= 1.0 and cell["users"] == 40 for cell in row.values())
    # planted communities: any personalised list beats the popular one
    assert doc["rows"]["relrec (fold-in)"]["5"]["recall"] > doc["rows"]["most popular"]["5"][
        "recall"]
    assert doc["fold_in_cost"]["method"] == "HingeFoldIn" and doc["fold_in_cost"]["history"] == 50
    assert "| relrec (fold-in) |" in (tmp_path / "cold_users.md").read_text()
