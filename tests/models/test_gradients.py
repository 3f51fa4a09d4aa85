"""The training forward and its gradients against the loop-based equations of DESIGN §1.

`triplet_distances` is the hot path of training: restructured for speed (the folded pair
logits with a written-out backward, the user slot kept apart from the history, pads left in
place under the mask), it must still be the same function of every parameter. The reference is
`test_equations.reference_relation`, written per user and per candidate, differentiated by
autograd; both run in float64 and must agree to 1e-6, for one and for several negatives, with
and without `copy`, and across the row chunks of the folded logits.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import models.lram as lram_module
from models.base import RelationalModel
from tests.models.test_equations import (
    KINDS,
    _inputs,
    _model,
    _real_history,
    reference_relation,
)


def _reference_distances(model: RelationalModel, users: Tensor, pos: Tensor, neg: Tensor,
                         hist: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """(d_pos [B], d_neg [B, n]) from the per-pair equations."""
    d_pos, d_neg = [], []
    for b in range(len(users)):
        p = model.user_emb.weight[users[b]]
        history = _real_history(model, hist[b], mask[b])
        q_pos = model.item_emb.weight[pos[b]]
        r_pos, _ = reference_relation(model, p, q_pos, history)
        d_pos.append(((p + r_pos - q_pos) ** 2).sum())
        row = []
        for j in neg[b].tolist():
            q = model.item_emb.weight[j]
            r = r_pos if model.config.copy else reference_relation(model, p, q, history)[0]
            row.append(((p + r - q) ** 2).sum())
        d_neg.append(torch.stack(row))
    return torch.stack(d_pos), torch.stack(d_neg)


def _grads(model: RelationalModel, loss: Tensor) -> dict[str, Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _weights(shape: tuple[int, ...], seed: int) -> Tensor:
    """Random loss weights, so that every distance (and every parameter) gets a gradient."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("copy", [False, True])
@pytest.mark.parametrize("n_neg", [1, 3])
def test_training_forward_and_gradients_match_the_equations(
    kind: str, copy: bool, n_neg: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tiny chunk budget, so the folded logits run over several row chunks (batch 5).
    monkeypatch.setattr(lram_module, "_FOLD_FLOATS", 100)
    model = _model(kind, copy=copy).double()
    users, items, hist, mask = _inputs(seed=3)
    pos, neg = items[:, 0], items[:, 1 : 1 + n_neg]
    neg = neg[:, 0] if n_neg == 1 else neg
    w_pos, w_neg = _weights(pos.shape, 0), _weights(neg.shape, 1)

    d_pos, d_neg = model.triplet_distances(users, pos, neg, hist, mask)
    assert d_pos.shape == pos.shape and d_neg.shape == neg.shape
    got = _grads(model, (w_pos * d_pos).sum() + (w_neg * d_neg).sum())

    ref_pos, ref_neg = _reference_distances(model, users, pos, neg.reshape(len(pos), -1),
                                            hist, mask)
    want = _grads(model, (w_pos * ref_pos).sum() + (w_neg.reshape(ref_neg.shape) * ref_neg).sum())

    torch.testing.assert_close(d_pos, ref_pos.detach(), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(d_neg.reshape(ref_neg.shape), ref_neg.detach(), rtol=1e-6,
                               atol=1e-9)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-6, atol=1e-9, msg=name)


@pytest.mark.parametrize("kind", ["hlr", "hlr++", "adacml"])
def test_pad_slots_get_no_gradient(kind: str) -> None:
    """Pads keep whatever row they name; under the mask, that row must not move."""
    model = _model(kind).double()
    users, items, hist, mask = _inputs(seed=4)
    pad_only = 11  # a row named by pads only
    hist = torch.where(mask, hist, torch.full_like(hist, pad_only))
    keep = (hist != pad_only) | ~mask
    hist = torch.where(keep, hist, torch.zeros_like(hist))
    pos = torch.where(items[:, 0] == pad_only, torch.zeros_like(pos := items[:, 0]), pos)
    neg = torch.where(items[:, 1] == pad_only, torch.ones_like(neg := items[:, 1]), neg)
    d_pos, d_neg = model.triplet_distances(users, pos, neg, hist, mask)
    (d_pos.sum() + d_neg.sum()).backward()
    assert model.item_emb.weight.grad is not None
    assert torch.all(model.item_emb.weight.grad[pad_only] == 0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shared", [[2, 7, 11], [2, 7, 11, 4, 0, 9]])  # S below and above N
def test_shared_negatives_forward_and_gradients_match_the_equations(
    kind: str, shared: list[int]
) -> None:
    """The sampled softmax scores S candidates shared by the batch through `_shared_distance`
    (CML: one GEMM); every row's distances and gradients must still be the equations'."""
    model = _model(kind).double()
    users, items, hist, mask = _inputs(seed=5)
    pos, cands = items[:, 0], torch.tensor(shared)  # [B], [S]
    w_pos, w_neg = _weights(pos.shape, 2), _weights((len(pos), len(cands)), 3)

    d_pos, d_shared = model.shared_distances(users, pos, cands, hist, mask)
    assert d_pos.shape == pos.shape and d_shared.shape == (len(pos), len(cands))
    got = _grads(model, (w_pos * d_pos).sum() + (w_neg * d_shared).sum())

    per_row = cands.expand(len(pos), -1)  # the same candidates, written out per row
    ref_pos, ref_neg = _reference_distances(model, users, pos, per_row, hist, mask)
    want = _grads(model, (w_pos * ref_pos).sum() + (w_neg * ref_neg).sum())

    torch.testing.assert_close(d_pos, ref_pos.detach(), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(d_shared, ref_neg.detach(), rtol=1e-6, atol=1e-9)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-6, atol=1e-9, msg=name)
