"""Warm start (`trainer.init_from`): a history model begins as the run it starts from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.registry import build_model
from training.config import ConfigError, load_config
from training.pipeline import run
from training.run_dir import load_run
from training.synthetic import planted_interactions
from training.warm_start import warm_start


def _config(algorithm: str, epochs: int = 3, **trainer: object):
    return load_config(algorithm=algorithm, data={"path": "planted"},
                       model={"dim": 16, "n_memory": 4, "l_max": 8},
                       trainer={"epochs": epochs, "batch_size": 256, "lr": 0.01,
                                "progress": False, **trainer},
                       eval={"sampled": False})


@pytest.fixture(scope="module")
def cml_run(tmp_path_factory: pytest.TempPathFactory, planted_split) -> Path:
    out = tmp_path_factory.mktemp("cml-run")
    run(_config("cml"), out, split=planted_split)
    return out


@pytest.mark.parametrize("kind", ["hlr", "hlr++"])
def test_a_warm_started_history_model_scores_exactly_like_its_source(
        kind: str, cml_run: Path, planted_split) -> None:
    """The relation memory starts at zero, so before its first step the model is the CML."""
    source = load_run(cml_run).model
    cfg = _config(kind)
    model = build_model(cfg.model, planted_split.n_users, planted_split.n_items)
    copied = warm_start(model, cml_run, planted_split.train)
    assert {"user_emb.weight", "item_emb.weight"} <= set(copied)
    users = torch.arange(0, 40)
    items = torch.arange(planted_split.n_items).expand(len(users), -1)
    hist = torch.randint(0, planted_split.n_items, (len(users), 6))
    with torch.no_grad():
        expected = source.distance(source.user_emb(users), items)
        got = model.distance(model.user_emb(users), items, hist, torch.ones_like(hist, dtype=bool))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_training_from_a_warm_start_runs_and_moves_the_relation(cml_run: Path,
                                                                planted_split, tmp_path) -> None:
    result = run(_config("hlr", epochs=2, init_from=str(cml_run)), tmp_path, split=planted_split)
    model = result.model
    assert model is not None
    memories = [p for n, p in model.named_parameters() if n.endswith("memories")]
    assert memories and all(p.abs().sum() > 0 for p in memories)  # it learned a relation
    assert result.metrics["metrics"]["ndcg"] > 0


def test_a_run_on_other_rows_is_refused(cml_run: Path) -> None:
    other = planted_interactions(n_users=200, n_items=100, n_communities=4, items_per_user=20,
                                 seed=1)
    model = build_model(_config("hlr").model, other.n_users, other.n_items)
    with pytest.raises(ConfigError, match="same data"):
        warm_start(model, cml_run, other)


def test_a_missing_run_and_a_baseline_run_are_refused(tmp_path: Path, planted_split) -> None:
    model = build_model(_config("hlr").model, planted_split.n_users, planted_split.n_items)
    with pytest.raises(ConfigError, match="does not exist"):
        warm_start(model, tmp_path / "nowhere", planted_split.train)
    baseline = tmp_path / "pop"
    run(load_config(algorithm="pop", data={"path": "planted"}, eval={"sampled": False}),
        baseline, split=planted_split)
    with pytest.raises(ConfigError, match="baseline"):
        warm_start(model, baseline, planted_split.train)


def test_warm_start_with_a_final_refit_is_refused() -> None:
    with pytest.raises(ValueError, match="init_from with --final"):
        load_config(algorithm="hlr", data={"path": "planted"}, final=True,
                    trainer={"init_from": "runs/cml"})
