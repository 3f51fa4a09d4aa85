"""DDP under torchrun: two CPU processes (gloo) end with identical parameters, with the plain
hinge and with the text objectives (SERML's review regression; item text: LRD + projection),
whose extra modules DDP has to synchronise too."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.redis_process import free_port

ROOT = Path(__file__).resolve().parents[2]


def _train_two_ranks(data: Path, out: Path, model: str, *extra: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "training.distributed", "--data", str(data), "--model", model,
           "--k-core", "5", "--dim", "8", "--n-memory", "4", "--l-max", "8",
           "--epochs", "2", "--batch-size", "256", "--no-progress", "--eval-users", "50",
           "--set", "eval.sampled=false", "--dump-params", "--out", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _assert_identical(out: Path) -> None:
    a = torch.load(out / "params_rank0.pt")
    b = torch.load(out / "params_rank1.pt")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert (out / "metrics.json").is_file()


def test_two_processes_end_identical(sample_csv: Path, tmp_path: Path) -> None:
    _train_two_ranks(sample_csv, tmp_path / "ddp", "hlr")
    _assert_identical(tmp_path / "ddp")


@pytest.mark.parametrize("kind", ["hlr-item-text", "serml"])
def test_two_processes_end_identical_with_text_objectives(kind: str, sample_csv: Path,
                                                          tmp_path: Path) -> None:
    from training.readers import read_log
    from training.synthetic import write_item_text

    out = tmp_path / kind
    if kind == "serml":
        from tests.training.text.test_semantic import planted_reviews, write_amazon

        log = read_log(sample_csv)
        reviews = write_amazon(tmp_path / "reviews_Planted_5.json.gz", log, planted_reviews(log))
        _train_two_ranks(reviews, out, "serml", "--set", "text.hidden=4", "--set",
                         "text.word_dim=4", "--set", "model.copy=false")
    else:
        items = write_item_text(read_log(sample_csv), tmp_path / "items.csv")
        _train_two_ranks(sample_csv, out, "hlr", "--item-text", str(items), "--text-encoder",
                         "hashing", "--set", f"text.cache_dir={tmp_path / 'cache'}")
        config = json.loads((out / "config.json").read_text())
        assert config["text"]["item_text"] == str(items)
    _assert_identical(out)
