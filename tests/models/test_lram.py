"""LRAM(a, b) = softmax((a ⊙ b) K) M against the equation written out slot by slot."""

from __future__ import annotations

import pytest
import torch

from models.lram import LRAM, HistoryPairs


def _lram_by_slots(lram: LRAM, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    keys, memories = lram.keys.detach(), lram.memories.detach()
    logits = torch.stack([(a * b * keys[:, n]).sum() for n in range(keys.shape[1])])
    weights = logits.exp() / logits.exp().sum()
    return sum((weights[n] * memories[n] for n in range(keys.shape[1])), torch.zeros_like(a))


def test_lram_equals_the_equation() -> None:
    torch.manual_seed(0)
    lram = LRAM(dim=8, n_memory=5)
    a, b = torch.randn(4, 3, 8), torch.randn(4, 3, 8)
    with torch.no_grad():
        got = lram(a, b)
    assert got.shape == (4, 3, 8)
    for i in range(4):
        for j in range(3):
            torch.testing.assert_close(got[i, j], _lram_by_slots(lram, a[i, j], b[i, j]))


def test_weights_are_a_softmax_over_slots() -> None:
    torch.manual_seed(1)
    lram = LRAM(dim=8, n_memory=5)
    weights = lram.weights(torch.randn(6, 8) * 5, torch.randn(6, 8) * 5)
    assert weights.shape == (6, 5)
    assert torch.all(weights >= 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(6))
    torch.testing.assert_close(lram.read(weights), weights @ lram.memories)


@pytest.mark.parametrize("n_cand", [2, 9])  # the direct (C <= N) and the folded (C > N) orders
@pytest.mark.parametrize("shared", [True, False])
def test_pair_weights(n_cand: int, shared: bool) -> None:
    torch.manual_seed(2)
    lram = LRAM(dim=8, n_memory=5)
    q = torch.randn(n_cand, 8) if shared else torch.randn(3, n_cand, 8)
    x = torch.randn(3, 4, 8)
    got = lram.pair_weights(q, x)
    assert got.shape == (3, n_cand, 4, 5)
    for b in range(3):
        for c in range(n_cand):
            q_c = q[c] if shared else q[b, c]
            torch.testing.assert_close(got[b, c], lram.weights(q_c[None, :], x[b]))


def test_init_scale_is_one_over_sqrt_d() -> None:
    torch.manual_seed(3)
    lram = LRAM(dim=400, n_memory=50)
    assert lram.keys.shape == (400, 50) and lram.memories.shape == (50, 400)
    for table in (lram.keys, lram.memories):
        assert abs(table.std().item() - 400**-0.5) < 0.05 * 400**-0.5
        assert abs(table.mean().item()) < 0.005


def test_shared_distance_matches_translation() -> None:
    torch.manual_seed(4)
    lram = LRAM(dim=8, n_memory=5)
    users, items = torch.randn(3, 8), torch.randn(6, 8)
    weights = torch.softmax(torch.randn(6, 3, 5), -1)  # [C, B, N]
    with torch.no_grad():
        got = lram.shared_distance(users, items, weights)  # [B, C]
        want = ((users[None] + weights @ lram.memories - items[:, None]) ** 2).sum(-1).T
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_history_pairs_gather_the_pair_weights() -> None:
    torch.manual_seed(5)
    lram = LRAM(dim=8, n_memory=5)
    items = torch.randn(10, 8)
    hist = torch.tensor([[1, 4, 4, 0], [7, 1, 0, 0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    key = torch.randn(2, 5)
    q = torch.randn(6, 8)
    with torch.no_grad():
        pairs = HistoryPairs.build(lram, items, hist, mask, key)
        weights = pairs.weights(q)  # [C, U, N]
        direct = lram.pair_weights(q, items[hist])  # [B, C, L, N]
        logits = pairs.logits(weights)  # [B, L, C]
        attn = torch.rand(2, 4, 6)
        mixed = pairs.mix(weights, attn)  # [C, B, N]
    assert pairs.n_unique == 4
    want_logits = torch.einsum("bcln,bn->blc", direct, key)
    torch.testing.assert_close(logits[mask], want_logits[mask])
    assert torch.all(logits[~mask] < -1e29)  # pads: exp() is exactly 0
    torch.testing.assert_close(mixed, torch.einsum("blc,bcln->cbn", attn, direct))
