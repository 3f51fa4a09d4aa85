"""Trainer: learns the planted structure, keeps the best epoch, stops early, fails loudly."""

import math

import numpy as np
import pytest
import torch

from models.config import ModelConfig
from models.registry import build_model
from training.dataset import TrainDataset
from training.evaluator import full_ranking
from training.torch_scorer import ModelScorer
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


def test_background_batches_equal_inline_batches(planted_split) -> None:
    """The producer thread changes when batches are built, never which: same model."""
    states = []
    for prefetch in (0, 3):
        model, dataset, trainer = _setup(planted_split, kind="hlr", epochs=2, prefetch=prefetch)
        trainer.fit(dataset)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name


def test_a_failing_batch_producer_raises_in_the_trainer(planted_split) -> None:
    model, dataset, trainer = _setup(planted_split, kind="cml", epochs=1, prefetch=2)

    def broken(*args, **kwargs):
        yield next(TrainDataset.batches(dataset, *args, **kwargs))
        raise RuntimeError("sampler broke")

    dataset.batches = broken
    with pytest.raises(RuntimeError, match="sampler broke"):
        trainer.fit(dataset)


def test_hardest_keeps_the_closest_sampled_negative(planted_split) -> None:
    model, dataset, trainer = _setup(planted_split, kind="cml", negatives="hardest",
                                     n_negatives=5)
    batch = next(dataset.batches(np.random.default_rng(0), 64, n_negatives=5))
    assert batch.neg_rows.shape == (64, 5)
    chosen = trainer._choose_negatives(batch).neg_rows  # [64]
    with torch.no_grad():
        dist = model.distance(model.user_vectors(batch.user_rows), batch.neg_rows)
    want = batch.neg_rows.gather(1, dist.argmin(1, keepdim=True))[:, 0]
    assert torch.equal(chosen, want)
    # a history model ranks by the ‖p − q‖² proxy, which needs no relation
    model_h, dataset_h, trainer_h = _setup(planted_split, kind="hlr", negatives="hardest",
                                           n_negatives=5)
    batch = next(dataset_h.batches(np.random.default_rng(0), 64, n_negatives=5))
    p = model_h.user_vectors(batch.user_rows)[:, None, :]
    proxy = ((p - model_h.item_emb(batch.neg_rows)) ** 2).sum(-1)
    want = batch.neg_rows.gather(1, proxy.argmin(1, keepdim=True))[:, 0]
    assert torch.equal(trainer_h._choose_negatives(batch).neg_rows, want)


@pytest.mark.parametrize("negatives", ["uniform", "hardest", "warp", "mean", "softmax"])
def test_every_negative_mode_learns_the_planted_structure(planted_split, negatives) -> None:
    # the softmax shares its negatives across the batch: 16 of them, as few as a test can use
    model, dataset, trainer = _setup(planted_split, kind="cml", epochs=4, negatives=negatives,
                                     n_negatives=16 if negatives == "softmax" else 4)
    trainer.fit(dataset)
    test = full_ranking(ModelScorer(model, dataset), planted_split, progress=False).means()
    assert test["ndcg"] > 0.2  # chance is about 0.03


def test_shared_negatives_are_distinct_and_mark_the_rows_own_items(planted_split) -> None:
    _, dataset, _ = _setup(planted_split, kind="cml")
    batch = next(dataset.batches(np.random.default_rng(0), 64, n_negatives=30, shared=True))
    assert batch.neg_rows.shape == (30,) and len(set(batch.neg_rows.tolist())) == 30
    assert batch.neg_hits is not None and batch.neg_hits.shape == (64, 30)
    csr = planted_split.train.to_csr()
    for b, user in enumerate(batch.user_rows.tolist()):
        own = set(csr[user].indices.tolist())
        assert batch.neg_hits[b].tolist() == [item in own for item in batch.neg_rows.tolist()]
    assert batch.neg_hits.any()  # the planted users share items: some hits must occur


def test_softmax_trains_the_history_models(planted_split) -> None:
    model, dataset, trainer = _setup(planted_split, kind="hlr", epochs=6, negatives="softmax",
                                     n_negatives=16, temperature=0.3)
    result = trainer.fit(dataset)
    assert result.epochs[-1].loss < result.epochs[0].loss
    test = full_ranking(ModelScorer(model, dataset), planted_split, progress=False).means()
    assert test["ndcg"] > 0.2  # chance is about 0.03


def test_negative_modes_that_choose_need_several_negatives() -> None:
    with pytest.raises(ValueError, match="n_negatives >= 2"):
        TrainerConfig(negatives="hardest")


def test_memory_learning_rate_is_its_own_group(planted_split) -> None:
    model, _, trainer = _setup(planted_split, kind="hlr", lr_memory=1e-4)
    groups = trainer.optimizer.param_groups
    assert [g["lr"] for g in groups] == [0.01, 1e-4]
    memory = {id(p) for p in model.lram.parameters()}
    assert {id(p) for p in groups[1]["params"]} == memory
    assert not memory & {id(p) for p in groups[0]["params"]}


def test_cosine_schedule_anneals_and_plateau_halves(planted_split) -> None:
    _, dataset, trainer = _setup(planted_split, kind="cml", epochs=3, schedule="cosine")
    lrs = []
    trainer.fit(dataset, on_epoch=lambda log: lrs.append(trainer.optimizer.param_groups[0]["lr"]))
    assert lrs[0] == 0.01 and lrs[-1] < lrs[0]  # read before each epoch's step
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    _, dataset, trainer = _setup(planted_split, kind="cml", epochs=3, patience=5,
                                 schedule="plateau")
    scores = iter([0.5, 0.4, 0.3])
    trainer.fit(dataset, lambda m: next(scores))
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0025)


def test_on_epoch_sees_every_epoch_and_can_stop_training(planted_split) -> None:
    _, dataset, trainer = _setup(planted_split, kind="cml", epochs=5, patience=5)
    seen = []

    class PrunedError(Exception):
        pass

    def on_epoch(log):
        seen.append(log.epoch)
        if log.epoch == 2:
            raise PrunedError

    with pytest.raises(PrunedError):
        trainer.fit(dataset, lambda m: 0.1, on_epoch=on_epoch)
    assert seen == [1, 2]


def test_text_objectives_refuse_several_negatives_as_a_config_error() -> None:
    from training.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="hardest"):
        load_config(None, ["trainer.negatives=warp", "trainer.n_negatives=4"], algorithm="serml")
    cfg = load_config(None, ["trainer.negatives=hardest", "trainer.n_negatives=4"],
                      algorithm="serml")
    assert cfg.trainer.negatives == "hardest"
