"""bench/cold_start.py end to end in quick mode: held-out items placed offline and, through
the API, PUT with their text to the served model (issue 20)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cold_start_quick_puts_the_held_out_items_through_the_api(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "bench/cold_start.py", "--quick", "--out", str(tmp_path), "--table",
         str(tmp_path / "table.md")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((tmp_path / "seed0.json").read_text())
    api = doc["api"]
    assert api["users"] == doc["counts"]["cold_users"]
    # the service places an item as training's projection does, to float precision
    assert api["text_vs_offline_max_abs"] < 1e-5
    recall = api["recall"]
    assert set(recall) == {f"{how}/{cat}" for how in ("text", "random", "popular")
                           for cat in ("cold", "all")}
    # planted text: the PUT items reach their users, far more than placed at random
    assert recall["text/all"] > 2 * max(recall["random/all"], recall["popular/all"])
    # served as the offline protocol ranks them (same model, same seen items)
    for key, value in recall.items():
        assert abs(value - doc["cold"][key]["recall"]) < 0.05, key
    assert "| text (PUT) | whole catalogue |" in (tmp_path / "table.md").read_text()
