"""DDP under torchrun: two CPU processes (gloo) end with identical parameters."""

import socket
import subprocess
import sys
from pathlib import Path

import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_end_identical(sample_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "training.distributed", "--data", str(sample_csv), "--model", "hlr",
           "--k-core", "5", "--dim", "8", "--memories", "4", "--max-history", "8",
           "--epochs", "2", "--batch-size", "256", "--no-progress", "--eval-users", "50",
           "--set", "eval.sampled=false", "--dump-params", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(out / "params_rank0.pt")
    b = torch.load(out / "params_rank1.pt")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert (out / "metrics.json").is_file()
