"""ModelScorer's histories: train items at validation, train + validation items at test (issue 15,
as the HLR reference code evaluates its history models)."""

from __future__ import annotations

import numpy as np
import torch

from models.config import ModelConfig
from models.registry import build_model
from training.dataset import TrainDataset
from training.splits import Split
from training.torch_scorer import ModelScorer, train_valid_histories


def _items(hist: np.ndarray, mask: np.ndarray, row: int) -> set[int]:
    return set(hist[row][mask[row]].tolist())


def _known(part, user: int) -> set[int]:
    return set(part.item_rows[part.user_rows == user].tolist())


def test_test_histories_draw_from_train_and_validation(planted_split: Split) -> None:
    split = planted_split
    dataset = TrainDataset(split.train, l_max=1000)  # no cap: every known item is drawn
    users = np.unique(split.valid.user_rows)[:20]
    rng = np.random.default_rng(0)
    hist, mask = train_valid_histories(dataset, split.train, split.valid).histories(rng, users)
    v_hist, v_mask = dataset.histories(np.random.default_rng(0), users)
    for row, user in enumerate(users):
        train, valid = _known(split.train, user), _known(split.valid, user)
        assert _items(hist, mask, row) == train | valid
        assert _items(v_hist, v_mask, row) == train  # validation sees train only
        assert not _items(hist, mask, row) & _known(split.test, user)  # never the test


def test_test_histories_keep_the_cap_and_the_seed(planted_split: Split) -> None:
    split = planted_split
    dataset = TrainDataset(split.train, l_max=4)
    source = train_valid_histories(dataset, split.train, split.valid)
    users = np.arange(30)
    a = source.histories(np.random.default_rng(1), users)
    b = source.histories(np.random.default_rng(1), users)
    assert a[0].shape == (30, 4) and a[1].sum(axis=1).max() == 4
    np.testing.assert_array_equal(a[0], b[0])


def test_history_models_score_differently_with_validation_items(planted_split: Split) -> None:
    split = planted_split
    torch.manual_seed(0)
    users = np.unique(split.valid.user_rows)[:8]
    for kind, uses_history in (("hlr", True), ("cml", False)):
        cfg = ModelConfig(kind=kind, dim=8, n_memory=4, l_max=50)
        model = build_model(cfg, split.train.n_users, split.train.n_items)
        dataset = TrainDataset(split.train, cfg.l_max, cfg.uses_history)
        at_valid = ModelScorer(model, dataset).score(users)
        at_test = ModelScorer(model, train_valid_histories(dataset, split.train,
                                                           split.valid)).score(users)
        assert np.allclose(at_valid, at_test) != uses_history
