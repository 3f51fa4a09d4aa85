"""The contract every relational model keeps (implicit's `recommender_base_test` mixin style).

One suite parametrised over the model kinds: interface shapes, then learning a planted
checkerboard (4 user communities x 4 item blocks) well enough that each user's withheld item
ranks far above chance. Training is a plain loop here (uniform negatives, hinge loss, Adam,
`project_()` after each step) so that the models are tested without the trainer.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from models.base import RelationalModel
from models.config import ModelConfig
from models.losses import hinge_loss, softmax_loss
from models.registry import build_model, model_class

KINDS = ["cml", "lrml", "hlr", "hlr++", "adacml", "serml"]
N_COMMUNITIES, USERS_PER, ITEMS_PER, TAKEN_PER_USER = 4, 15, 10, 8
N_USERS, N_ITEMS = N_COMMUNITIES * USERS_PER, N_COMMUNITIES * ITEMS_PER
TOP_K = 5
# Chance HR@5 is 5/33 ≈ 0.15 (33 unseen items per user); a model that learned the blocks ranks
# the withheld item among its block's 3 unseen items, so HR@5 is close to 1.
MIN_HIT_RATE = 0.6


def planted() -> tuple[list[list[int]], list[int]]:
    """Per user: training items (7 of their block's 10) and one withheld item of the block."""
    rng = np.random.default_rng(2021)
    train, test = [], []
    for user in range(N_USERS):
        block = user // USERS_PER
        taken = rng.choice(ITEMS_PER, size=TAKEN_PER_USER, replace=False) + block * ITEMS_PER
        train.append(sorted(int(i) for i in taken[1:]))
        test.append(int(taken[0]))
    return train, test


def _padded(rows: list[list[int]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    hist = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for b, items in enumerate(rows):
        hist[b, : len(items)] = torch.tensor(items[:length], dtype=torch.long)
        mask[b, : len(items)] = True
    return hist, mask


def train(kind: str, steps: int = 60, seed: int = 0) -> tuple[RelationalModel, list[list[int]]]:
    """Full-batch training on every (user, positive); the history excludes the positive."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_items, _ = planted()
    cfg = ModelConfig(kind=kind, dim=16, n_memory=8, l_max=TAKEN_PER_USER, margin=0.5)
    model = build_model(cfg, N_USERS, N_ITEMS)
    users = torch.tensor([u for u, items in enumerate(train_items) for _ in items])
    positives = torch.tensor([i for items in train_items for i in items])
    pairs = zip(users.tolist(), positives.tolist(), strict=True)
    hist, mask = _padded([[j for j in train_items[u] if j != i] for u, i in pairs], cfg.l_max)
    seen = np.zeros((N_USERS, N_ITEMS), dtype=bool)
    for u, items in enumerate(train_items):
        seen[u, items] = True
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        negatives = rng.integers(0, N_ITEMS, size=len(users))
        clash = seen[users.numpy(), negatives]
        while clash.any():  # rejection against the user's training items, as the reference
            negatives[clash] = rng.integers(0, N_ITEMS, size=int(clash.sum()))
            clash = seen[users.numpy(), negatives]
        d_pos, d_neg = model.triplet_distances(
            users, positives, torch.from_numpy(negatives), hist, mask
        )
        loss = hinge_loss(d_pos, d_neg, cfg.margin)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.project_()
    return model, train_items


@pytest.mark.parametrize("kind", KINDS)
def test_learns_the_planted_blocks(kind: str) -> None:
    model, train_items = train(kind)
    _, test_items = planted()
    hist, mask = _padded(train_items, TAKEN_PER_USER)
    scores = model.score_all(torch.arange(N_USERS), hist, mask)  # [U, V]
    for u, items in enumerate(train_items):
        scores[u, items] = -torch.inf  # full-ranking protocol: seen items are excluded
    withheld = scores[torch.arange(N_USERS), torch.tensor(test_items)]
    ranks = (scores > withheld[:, None]).sum(1)  # 0 = top
    hit_rate = (ranks < TOP_K).float().mean().item()
    assert hit_rate >= MIN_HIT_RATE, f"{kind}: HR@{TOP_K} {hit_rate:.2f}"


@pytest.mark.parametrize("kind", KINDS)
def test_interface(kind: str) -> None:
    cfg = ModelConfig(kind=kind, dim=8, n_memory=4, l_max=3)
    model = build_model(cfg, n_users=5, n_items=9)
    assert isinstance(model, model_class(kind)) and isinstance(model, RelationalModel)
    assert model.kind == kind and model.config == cfg
    assert (model.lram is None) == (kind in ("cml", "adacml"))
    users, items = torch.tensor([0, 4]), torch.tensor([[1, 2, 3], [8, 0, 5]])
    hist, mask = torch.tensor([[1, 2, 0], [0, 0, 0]]), torch.tensor([[1, 1, 0], [0, 0, 0]])
    user_vecs = model.user_vectors(users)
    assert user_vecs.shape == (2, 8)
    dist = model.distance(user_vecs, items, hist, mask.bool())
    assert dist.shape == (2, 3) and dist.dtype == torch.float32 and torch.all(dist >= 0)
    # A float 0/1 mask (the ONNX scorer's input) means the same as the bool mask.
    torch.testing.assert_close(model.distance(user_vecs, items, hist, mask.float()), dist)
    assert model.relation(user_vecs, items, hist, mask.bool()).shape == (2, 3, 8)
    attn = model.attention(user_vecs, items, hist, mask.bool())
    assert (attn is None) == (kind not in ("hlr", "hlr++"))
    assert attn is None or attn.shape == (2, 3, 3)
    d_pos, d_neg = model.triplet_distances(users, items[:, 0], items[:, 1], hist, mask.bool())
    assert d_pos.shape == d_neg.shape == (2,)
    assert model.score_all(users, hist, mask.bool()).shape == (2, 9)
    assert cfg.uses_history == (kind in ("hlr", "hlr++", "adacml"))


def test_config_validation() -> None:
    cfg = ModelConfig(kind="hlr++")
    assert (cfg.dim, cfg.n_memory, cfg.l_max, cfg.margin) == (100, 20, 50, 0.5)
    assert cfg.copy is False and cfg.clip_memory is False and cfg.history_sampling == "uniform"
    assert ModelConfig(kind="lrml", copy=True).copy is True
    assert ModelConfig.model_validate(cfg.model_dump()) == cfg  # round-trips through a manifest
    assert ModelConfig.model_validate_json(cfg.model_dump_json()) == cfg
    for bad in (
        {"kind": "mf"},
        {"kind": "cml", "dim": 0},
        {"kind": "cml", "n_memory": -1},
        {"kind": "cml", "l_max": 0},
        {"kind": "cml", "margin": 0.0},
        {"kind": "cml", "history_sampling": "popular"},
        {"kind": "cml", "unknown": 1},
    ):
        with pytest.raises(ValidationError):
            ModelConfig(**bad)


def test_hinge_loss() -> None:
    d_pos, d_neg = torch.tensor([0.1, 1.0, 0.2]), torch.tensor([1.0, 0.2, 0.4])
    # [0.1 − 1.0 + 0.5]₊ + [1.0 − 0.2 + 0.5]₊ + [0.2 − 0.4 + 0.5]₊ = 0 + 1.3 + 0.3
    torch.testing.assert_close(hinge_loss(d_pos, d_neg, 0.5), torch.tensor(1.6))
    mask = torch.tensor([True, False, True])
    torch.testing.assert_close(hinge_loss(d_pos, d_neg, 0.5, mask), torch.tensor(0.3))
    torch.testing.assert_close(hinge_loss(d_pos, d_neg, 0.5, mask.float()), torch.tensor(0.3))


def test_softmax_loss() -> None:
    d_pos, d_neg = torch.tensor([0.5, 2.0]), torch.tensor([[1.0, 3.0], [0.0, 2.0]])
    # row 0: −log e^{−0.5/τ} / (e^{−0.5/τ} + e^{−1/τ} + e^{−3/τ}), τ = 0.5
    row0 = -math.log(math.exp(-1) / (math.exp(-1) + math.exp(-2) + math.exp(-6)))
    row1 = -math.log(math.exp(-4) / (math.exp(-4) + math.exp(0) + math.exp(-4)))
    torch.testing.assert_close(softmax_loss(d_pos, d_neg, 0.5),
                               torch.tensor(row0 + row1))
    # an excluded negative (an accidental hit: the row's own positive) is left out
    exclude = torch.tensor([[False, False], [True, False]])
    row1_kept = -math.log(math.exp(-4) / (math.exp(-4) + math.exp(-4)))
    torch.testing.assert_close(softmax_loss(d_pos, d_neg, 0.5, exclude),
                               torch.tensor(row0 + row1_kept))
