"""Each model's vectorised distance against a loop-based evaluation of DESIGN §1's equations.

The reference below is written per user and per candidate from the table in DESIGN §1, with
no batching, no folding and no masking tricks: the history is a Python list of the real items.
Models run in float64 so that the comparison is tight; `score_all` (which folds the arithmetic
differently) is compared with `distance` in float32.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from models.base import RelationalModel
from models.config import ModelConfig
from models.registry import build_model

KINDS = ["cml", "lrml", "hlr", "hlr++", "adacml"]
N_USERS, N_ITEMS, DIM, N_MEMORY, L_MAX = 6, 13, 6, 4, 5


def _lram(model: RelationalModel, a: Tensor, b: Tensor) -> Tensor:
    """LRAM(a, b) = softmax((a ⊙ b) K) M, slot by slot."""
    assert model.lram is not None
    keys, memories = model.lram.keys, model.lram.memories
    logits = torch.stack([(a * b * keys[:, n]).sum() for n in range(keys.shape[1])])
    weights = torch.exp(logits) / torch.exp(logits).sum()
    return sum((weights[n] * memories[n] for n in range(len(weights))), torch.zeros_like(a))


def _softmax(values: list[Tensor]) -> list[Tensor]:
    exps = [torch.exp(v) for v in values]
    total = sum(exps, torch.zeros(()))
    return [e / total for e in exps]


def _mix(weights: list[Tensor], vectors: list[Tensor], like: Tensor) -> Tensor:
    return sum((w * v for w, v in zip(weights, vectors, strict=True)), torch.zeros_like(like))


def reference_relation(
    model: RelationalModel, p: Tensor, q: Tensor, hist: list[Tensor]
) -> tuple[Tensor, list[Tensor] | None]:
    """r(u, v) from DESIGN §1 for one user vector p, one item vector q and the real history."""
    kind = model.kind
    if kind == "cml":
        return torch.zeros_like(p), None
    if kind == "lrml":
        return _lram(model, p, q), None
    if kind == "adacml":
        if not hist:
            return torch.zeros_like(p), None
        attn = _softmax([torch.dot(h, q) for h in hist])
        return _mix(attn, hist, p), None
    if kind == "hlr":
        slots = [p, *hist]
        rels = [_lram(model, q, x) for x in slots]
        beta = _softmax([torch.dot(r, p) for r in rels])
        return _mix(beta, rels, p), beta[1:]
    # hlr++: item-item branch over the history only, plus the user-preference branch.
    item_rel, beta = torch.zeros_like(p), []
    if hist:
        rels = [_lram(model, q, h) for h in hist]
        beta = _softmax([torch.dot(r, p) for r in rels])
        item_rel = _mix(beta, rels, p)
    prefs = [_lram(model, p, y) for y in [q, *hist]]
    alpha = _softmax([torch.dot(r, q) for r in prefs])
    return item_rel + _mix(alpha, prefs, p), beta


def reference_distance(model: RelationalModel, p: Tensor, q: Tensor, hist: list[Tensor]) -> Tensor:
    relation, _ = reference_relation(model, p, q, hist)
    return ((p + relation - q) ** 2).sum()


def _real_history(model: RelationalModel, rows: Tensor, mask: Tensor) -> list[Tensor]:
    return [
        model.item_emb.weight[r] for r, m in zip(rows.tolist(), mask.tolist(), strict=True) if m
    ]


def _inputs(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Users, candidates [B, C], and histories of varied lengths: full, partial, holed, empty."""
    gen = torch.Generator().manual_seed(seed)
    users = torch.tensor([0, 1, 2, 3, 4])
    items = torch.randint(0, N_ITEMS, (5, 7), generator=gen)
    hist = torch.randint(0, N_ITEMS, (5, L_MAX), generator=gen)
    mask = torch.tensor(
        [
            [True, True, True, True, True],
            [True, True, False, False, False],
            [False, True, False, True, False],  # holes: the mask, not the position, decides
            [False, False, False, False, False],  # empty history
            [True, False, False, False, False],
        ]
    )
    hist = torch.where(mask, hist, torch.zeros_like(hist))  # pads hold row 0, as documented
    return users, items, hist, mask


def _model(kind: str, **overrides: object) -> RelationalModel:
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, dim=DIM, n_memory=N_MEMORY, l_max=L_MAX, **overrides)
    model = build_model(cfg, N_USERS, N_ITEMS)
    with torch.no_grad():  # off the init scale, so that the softmaxes are not near-uniform
        for param in model.parameters():
            param.mul_(3.0)
    return model


@pytest.mark.parametrize("kind", KINDS)
def test_distance_matches_the_equations(kind: str) -> None:
    model = _model(kind).double()
    users, items, hist, mask = _inputs()
    user_vecs = model.user_vectors(users)
    with torch.no_grad():
        got = model.distance(user_vecs, items, hist, mask)
        for b in range(len(users)):
            history = _real_history(model, hist[b], mask[b])
            for c in range(items.shape[1]):
                want = reference_distance(
                    model, user_vecs[b], model.item_emb.weight[items[b, c]], history
                )
                torch.testing.assert_close(got[b, c], want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("copy", [False, True])
def test_triplet_distances_follow_copy(kind: str, copy: bool) -> None:
    model = _model(kind, copy=copy).double()
    users, items, hist, mask = _inputs(seed=1)
    pos, neg = items[:, 0], items[:, 1]
    with torch.no_grad():
        d_pos, d_neg = model.triplet_distances(users, pos, neg, hist, mask)
        for b in range(len(users)):
            p, history = model.user_emb.weight[users[b]], _real_history(model, hist[b], mask[b])
            q_pos, q_neg = model.item_emb.weight[pos[b]], model.item_emb.weight[neg[b]]
            r_pos, _ = reference_relation(model, p, q_pos, history)
            # copy=True (original LRML): the negative is scored with the positive's relation.
            r_neg = r_pos if copy else reference_relation(model, p, q_neg, history)[0]
            torch.testing.assert_close(d_pos[b], ((p + r_pos - q_pos) ** 2).sum())
            torch.testing.assert_close(d_neg[b], ((p + r_neg - q_neg) ** 2).sum())


@pytest.mark.parametrize("kind", ["hlr", "hlr++"])
def test_attention_is_the_history_weight(kind: str) -> None:
    model = _model(kind).double()
    users, items, hist, mask = _inputs(seed=2)
    user_vecs = model.user_vectors(users)
    with torch.no_grad():
        attn = model.attention(user_vecs, items, hist, mask)
    assert attn is not None and attn.shape == (*items.shape, L_MAX)
    assert torch.all(attn[~mask[:, None, :].expand_as(attn)] == 0)  # pads weigh nothing
    for b in range(len(users)):
        history = _real_history(model, hist[b], mask[b])
        for c in range(items.shape[1]):
            q = model.item_emb.weight[items[b, c]]
            _, beta = reference_relation(model, user_vecs[b], q, history)
            assert beta is not None
            got = attn[b, c][mask[b]]
            torch.testing.assert_close(got, torch.stack(beta) if beta else got.new_zeros(0))
    sums = attn.sum(-1)  # [B, C]
    has_history = mask.any(-1)[:, None].expand_as(sums)
    if kind == "hlr++":  # the item-item attention is over the history alone
        torch.testing.assert_close(sums[has_history], torch.ones_like(sums[has_history]))
    else:  # HLR shares its attention with the user slot: the history gets 1 − β_user
        assert torch.all((sums[has_history] > 0) & (sums[has_history] < 1))
    assert torch.all(sums[~has_history] == 0)


@pytest.mark.parametrize("kind", ["cml", "lrml", "adacml"])
def test_attention_is_none_without_item_attention(kind: str) -> None:
    model = _model(kind)
    users, items, hist, mask = _inputs()
    assert model.attention(model.user_vectors(users), items, hist, mask) is None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunk", [4, 512])
def test_score_all_is_minus_distance_to_every_item(kind: str, chunk: int) -> None:
    model = _model(kind)
    users, _, hist, mask = _inputs(seed=3)
    every_item = torch.arange(N_ITEMS).expand(len(users), N_ITEMS)
    want = -model.distance(model.user_vectors(users), every_item, hist, mask).detach()
    got = model.score_all(users, hist, mask, chunk=chunk)
    assert got.shape == (len(users), N_ITEMS)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # No history at all (None) is the empty history.
    empty = torch.zeros_like(mask)
    want_empty = -model.distance(model.user_vectors(users), every_item, hist, empty).detach()
    torch.testing.assert_close(
        model.score_all(users, chunk=chunk), want_empty, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("kind", ["lrml", "hlr", "hlr++"])
def test_score_all_with_large_memories(kind: str) -> None:
    """M rows far outside the unit ball take score_all's exact-max softmax path."""
    model = _model(kind)
    assert model.lram is not None
    with torch.no_grad():
        model.lram.memories.mul_(100.0)
    users, _, hist, mask = _inputs(seed=4)
    every_item = torch.arange(N_ITEMS).expand(len(users), N_ITEMS)
    want = -model.distance(model.user_vectors(users), every_item, hist, mask).detach()
    torch.testing.assert_close(model.score_all(users, hist, mask), want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_pad_rows_do_not_matter(kind: str) -> None:
    model = _model(kind)
    users, items, hist, mask = _inputs(seed=5)
    other = torch.where(mask, hist, torch.full_like(hist, N_ITEMS - 1))
    user_vecs = model.user_vectors(users)
    with torch.no_grad():
        torch.testing.assert_close(
            model.distance(user_vecs, items, hist, mask),
            model.distance(user_vecs, items, other, mask),
            rtol=0.0,
            atol=0.0,
        )
    torch.testing.assert_close(
        model.score_all(users, hist, mask),
        model.score_all(users, other, mask),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.parametrize("kind", KINDS)
def test_empty_history_is_finite_with_finite_gradients(kind: str) -> None:
    model = _model(kind)
    users, items, hist, _ = _inputs(seed=6)
    empty = torch.zeros(hist.shape, dtype=torch.bool)
    d_pos, d_neg = model.triplet_distances(users, items[:, 0], items[:, 1], hist, empty)
    (d_pos - d_neg).sum().backward()
    assert torch.isfinite(d_pos).all() and torch.isfinite(d_neg).all()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert torch.isfinite(model.score_all(users, hist, empty)).all()
