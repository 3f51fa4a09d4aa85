"""bench/softmax_step.py runs at a small size and reports both softmax paths against the hinge."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_softmax_step_bench_reports_ratios() -> None:
    out = subprocess.run(
        [sys.executable, "bench/softmax_step.py", "--users", "40", "--items", "90",
         "--shared", "8", "--repeat", "1"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=300).stdout
    assert re.search(r"hinge, one negative: \d+\.\d+ s", out)
    assert re.search(r"softmax S=8: per distinct item \d+\.\d+ s \(\d+\.\dx hinge\), per slot "
                     r"\d+\.\d+ s \(\d+\.\dx hinge, \d+\.\dx slower\)", out)
