"""Shared fixtures: planted synthetic data and one tiny trained artifact for the whole session.

Training once and reusing the artifact keeps the suite fast (STYLE.md, Tests); nothing here
downloads anything.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Under pytest-xdist (`-n 2`, one worker a core) each worker keeps to one thread, so that the
# two workers do not oversubscribe CI's two cores; a serial run uses both.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture(scope="session")
def planted_split():
    """Binarised, 5-core, per-user split of a planted log: 4 communities x 4 item blocks."""
    from training.filters import binarize, k_core
    from training.splits import per_user
    from training.synthetic import planted_interactions

    raw = planted_interactions(n_users=240, n_items=120, n_communities=4, items_per_user=24,
                               noise=0.05, seed=0)
    return per_user(k_core(binarize(raw, 4.0), 5), seed=0)


@pytest.fixture(scope="session")
def sample_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A planted log written as CSV (user,item,rating,timestamp), as `relrec sample` does."""
    from training.synthetic import write_sample

    path = tmp_path_factory.mktemp("data") / "sample.csv"
    return write_sample(path, n_users=240, n_items=120, n_communities=4, items_per_user=24,
                        seed=0)


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory: pytest.TempPathFactory, planted_split) -> Path:
    """A small HLR trained on the planted split, saved as a training run directory."""
    from training.config import load_config
    from training.pipeline import run

    cfg = load_config(
        algorithm="hlr",
        data={"path": "planted", "k_core": 5},
        model={"dim": 16, "n_memory": 4, "l_max": 8},
        trainer={"epochs": 8, "batch_size": 256, "lr": 0.01, "progress": False,
                 "patience": 8},
        eval={"sampled": False},
    )
    out = tmp_path_factory.mktemp("run")
    run(cfg, out, split=planted_split)
    return out


@pytest.fixture(scope="session")
def tiny_artifact_dir(tmp_path_factory: pytest.TempPathFactory, tiny_run_dir: Path) -> Path:
    """ARTIFACTS_DIR holding one exported version of the tiny HLR and `current` pointing at it."""
    from training.exporter import export_run

    out = tmp_path_factory.mktemp("artifacts")
    export_run(tiny_run_dir, out)
    return out
