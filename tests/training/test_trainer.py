"""Trainer: learns the planted structure, keeps the best epoch, stops early, fails loudly."""

import math

import numpy as np
import pytest
import torch

from models.config import ModelConfig
from models.registry import build_model
from training.dataset import TrainDataset
from training.evaluator import full_ranking
from training.scorer import ModelScorer
from training.trainer import Trainer, TrainerConfig, TrainingDivergedError


def _setup(split, kind: str = "hlr", **trainer):
    cfg = ModelConfig(kind=kind, dim=16, n_memory=4, l_max=8)
    torch.manual_seed(0)
    model = build_model(cfg, split.train.n_users, split.train.n_items)
    dataset = TrainDataset(split.train, cfg.l_max, cfg.uses_history)
    tcfg = TrainerConfig(batch_size=256, lr=0.01, progress=False, **trainer)
    return model, dataset, Trainer(model, tcfg)


def _valid_ndcg(split, dataset):
    def validate(model):
        report = full_ranking(ModelScorer(model, dataset), split, stage="valid", progress=False)
        return report.means()["ndcg"]
    return validate


def test_training_lowers_loss_and_beats_chance(planted_split) -> None:
    model, dataset, trainer = _setup(planted_split, epochs=6, patience=6)
    result = trainer.fit(dataset, _valid_ndcg(planted_split, dataset))
    losses = [e.loss for e in result.epochs]
    assert losses[-1] < 0.5 * losses[0]
    test = full_ranking(ModelScorer(model, dataset), planted_split, progress=False).means()
    # chance NDCG@10 with ~120 items and ~3 test items per user is about 0.03
    assert test["ndcg"] > 0.2
    assert 0.0 < result.data_share < 1.0 and result.mean_epoch_time_s > 0


def test_every_row_stays_in_the_unit_ball(planted_split) -> None:
    model, dataset, trainer = _setup(planted_split, epochs=2)
    trainer.fit(dataset)
    for table in (model.user_emb.weight, model.item_emb.weight):
        assert float(table.detach().norm(dim=1).max()) <= 1 + 1e-5


def test_best_epoch_is_restored_and_patience_stops(planted_split) -> None:
    model, dataset, trainer = _setup(planted_split, epochs=20, patience=2)
    scores = iter([0.1, 0.5, 0.3, 0.2, 0.9, 0.9])
    snapshots = {}

    def validate(m):
        snapshots[len(snapshots) + 1] = {k: v.clone() for k, v in m.state_dict().items()}
        return next(scores)

    result = trainer.fit(dataset, validate)
    assert result.best_epoch == 2 and len(result.epochs) == 4  # 0.3, 0.2: two stale epochs
    for name, value in model.state_dict().items():
        assert torch.equal(value, snapshots[2][name])


def test_nan_loss_raises_a_clear_error(planted_split) -> None:
    model, dataset, trainer = _setup(planted_split, kind="lrml", epochs=1)
    with torch.no_grad():
        model.user_emb.weight.fill_(math.nan)
    with pytest.raises(TrainingDivergedError, match="learning rate"):
        trainer.fit(dataset)


def test_same_seed_same_model(planted_split) -> None:
    states = []
    for _ in range(2):
        model, dataset, trainer = _setup(planted_split, kind="cml", epochs=1)
        trainer.fit(dataset)
        states.append(model.item_emb.weight.detach().clone())
    assert torch.equal(states[0], states[1])


def test_batches_cover_every_positive_once(planted_split) -> None:
    dataset = TrainDataset(planted_split.train, 8)
    seen = [b.user_rows.numpy() * dataset.n_items + b.pos_rows.numpy()
            for b in dataset.batches(np.random.default_rng(0), 100)]
    keys = np.concatenate(seen)
    assert len(keys) == len(np.unique(keys)) == len(dataset)
