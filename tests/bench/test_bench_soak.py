"""bench/soak.py (issue 8) runs end to end in its quick mode, so the soak cannot rot.

A real redis-server and `relrec serve` with 2 workers under mixed GET/POST for ~15 s. What
is asserted is what the soak's verdict is made of (samples, growth figures, retention), never
a timing or a memory bound: those depend on the machine and belong to the 30-minute run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_soak_quick_mode_reports_memory_and_bounded_log(tmp_path: Path) -> None:
    out_json = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "bench/soak.py", "--quick", "--cache", str(tmp_path / "cat"),
         "--json", str(out_json)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out_json.read_text())
    traffic = result["traffic"]
    assert traffic["get"] > 0 and traffic["post"] > 0
    assert traffic["errors"] == 0  # only 200, or 429/503 when shedding: never a 500
    assert len(result["samples"]) >= 3
    for key in ("api_rss", "redis_used", "redis_rss"):
        assert set(result[key]) == {"first", "max", "last", "slope_mb_per_min"}
        assert result[key]["max"] >= result[key]["first"] > 0
    # Retention works: the log stream is trimmed near --log-max-len (1,000 in quick mode),
    # although more events than that were posted (half the requests are POSTs of 1-5).
    assert result["log_len"] < 2 * 1000 < traffic["events"]
