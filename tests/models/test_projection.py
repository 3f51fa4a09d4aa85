"""project_(): the unit-ball constraint of CML/LRML/HLR, applied after every optimiser step."""

from __future__ import annotations

import pytest
import torch

from models.base import RelationalModel
from models.config import ModelConfig
from models.registry import build_model

KINDS = ["cml", "lrml", "hlr", "hlr++", "adacml"]


def _inflated(kind: str, clip_memory: bool) -> RelationalModel:
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, dim=8, n_memory=4, clip_memory=clip_memory), 20, 30)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(torch.rand(param.shape[0], 1) * 3.0)  # rows both inside and outside
    return model


@pytest.mark.parametrize("kind", KINDS)
def test_rows_end_in_the_unit_ball(kind: str) -> None:
    model = _inflated(kind, clip_memory=False)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.project_()
    for table in (model.user_emb.weight, model.item_emb.weight):
        norms = table.detach().norm(dim=1)
        assert torch.all(norms <= 1 + 1e-6)
    for name in ("user_emb.weight", "item_emb.weight"):
        old, new = before[name], dict(model.named_parameters())[name].detach()
        inside = old.norm(dim=1) <= 1
        torch.testing.assert_close(new[inside], old[inside])  # rows inside are untouched
        # rows outside keep their direction and land on the sphere
        cos = torch.nn.functional.cosine_similarity(new[~inside], old[~inside], dim=1)
        torch.testing.assert_close(cos, torch.ones_like(cos))
        torch.testing.assert_close(new[~inside].norm(dim=1), torch.ones(int((~inside).sum())))
    if model.lram is not None:  # without clip_memory, K and M are left alone
        torch.testing.assert_close(model.lram.keys.detach(), before["lram.keys"])
        torch.testing.assert_close(model.lram.memories.detach(), before["lram.memories"])


@pytest.mark.parametrize("kind", ["lrml", "hlr", "hlr++"])
def test_clip_memory_clips_key_and_memory_rows(kind: str) -> None:
    model = _inflated(kind, clip_memory=True)
    assert model.lram is not None
    assert model.lram.keys.detach().norm(dim=1).max() > 1  # something to clip
    model.project_()
    # Rows of K [d, N] and of M [N, d], as the reference's clip_by_norm(axes=[1]).
    assert torch.all(model.lram.keys.detach().norm(dim=1) <= 1 + 1e-6)
    assert torch.all(model.lram.memories.detach().norm(dim=1) <= 1 + 1e-6)


def test_project_keeps_gradients_usable() -> None:
    model = _inflated("hlr", clip_memory=True)
    model.project_()
    users, items = torch.arange(3), torch.arange(3)
    d_pos, d_neg = model.triplet_distances(users, items, items + 3)
    (d_pos - d_neg).sum().backward()
    assert model.user_emb.weight.grad is not None
    assert model.user_emb.weight.requires_grad and model.lram is not None
    assert model.lram.keys.requires_grad
