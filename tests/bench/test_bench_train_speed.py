"""bench/train_speed.py: one epoch per model in a subprocess, figures as JSON and a table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_train_speed_quick_measures_every_requested_model(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    done = subprocess.run([sys.executable, "bench/train_speed.py", "--quick", "--models", "cml",
                           "hlr", "--threads", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == ["cml", "hlr"]
    for row in rows:
        new = row["new"]
        assert new["threads"] == 1 and new["device"] == "cpu" and new["steps"] > 0
        assert new["s_per_epoch"] > 0 and 0 <= new["batch_share"] <= 1
        assert new["ms_per_step"] * new["steps"] / 1e3 == pytest.approx(new["s_per_epoch"])
        assert new["peak_rss_mb"] > 50
    assert "| hlr | 1 |" in done.stdout  # the markdown table
