"""Training losses as pure functions of distances (spotlight `losses.py` style).

The trainer composes them with `RelationalModel.triplet_distances`; the model does not own
its loss.
"""

from __future__ import annotations

import torch
from torch import Tensor


def hinge_loss(d_pos: Tensor, d_neg: Tensor, margin: float, mask: Tensor | None = None) -> Tensor:
    """Σ_batch Σ_negatives [d(u, v) − d(u, v⁻) + margin]₊ on squared distances (DESIGN §1).

    Summed, not averaged, as the reference (`tf.reduce_sum`), so the gradient scale grows with
    the batch size. d_pos `[B]`; d_neg `[B]` (one negative, the reference) or `[B, n]` (each
    sampled negative its own triplet). `mask` `[B]` (bool or 0/1) drops triplets, e.g. the
    padding of a last batch.
    """
    return _masked_sum(_hinges(d_pos, d_neg, margin).sum(-1), mask)


def mean_hinge_loss(d_pos: Tensor, d_neg: Tensor, margin: float,
                    mask: Tensor | None = None) -> Tensor:
    """Σ_batch mean_negatives [d(u, v) − d(u, v⁻) + margin]₊: n negatives weigh as one."""
    return _masked_sum(_hinges(d_pos, d_neg, margin).mean(-1), mask)


def warp_loss(d_pos: Tensor, d_neg: Tensor, margin: float, n_items: int,
              mask: Tensor | None = None) -> Tensor:
    """Rank-weighted hinge on the closest negative (CML paper, Hsieh et al. WWW 2017, §3.3).

    Of n sampled negatives, the share that violates the margin estimates the positive's rank
    among all items, rank ≈ n_items · violators / n; the hinge against the closest negative is
    weighted by log(rank + 1), so positives ranked far down weigh more (WARP). The weight is a
    constant for the gradient, as in the paper's code. d_neg `[B, n]`.
    """
    hinges = _hinges(d_pos, d_neg, margin)  # [B, n]
    with torch.no_grad():
        rank = (hinges > 0).to(d_neg.dtype).mean(-1) * n_items  # [B]
        weight = torch.log1p(rank)
    closest = d_neg.reshape(len(d_pos), -1).amin(-1)  # [B]
    return _masked_sum(torch.relu(d_pos - closest + margin) * weight, mask)


def softmax_loss(d_pos: Tensor, d_neg: Tensor, temperature: float,
                 exclude: Tensor | None = None) -> Tensor:
    """Σ_batch −log softmax of the positive among itself and the negatives, logits −d/τ.

    A sampled softmax (InfoNCE) on squared distances: every negative gets a gradient weighted
    by how close it is (its softmax share), instead of the hinge's all-or-nothing, so many
    negatives keep teaching long after one random negative clears the margin (FINDINGS:
    "Negatives and training length"). Negatives are drawn uniformly, so log Q is a constant
    and needs no correction. Summed over the batch like the hinge. d_neg `[B, n]` (each row its
    own negatives, or S shared by the batch); `exclude` `[B, n]` bool drops the negatives that
    are the row's own positives (accidental hits of shared negatives).
    """
    logits = -torch.cat([d_pos[:, None], d_neg.reshape(len(d_pos), -1)], dim=1) / temperature
    if exclude is not None:
        dropped = torch.cat([exclude.new_zeros(len(d_pos), 1), exclude], dim=1)
        logits = logits.masked_fill(dropped, float("-inf"))
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).sum()


def _hinges(d_pos: Tensor, d_neg: Tensor, margin: float) -> Tensor:
    """[d(u, v) − d(u, v⁻) + margin]₊ `[B, n]` (n = 1 for a `[B]` d_neg)."""
    return torch.relu(d_pos[:, None] - d_neg.reshape(len(d_pos), -1) + margin)


def _masked_sum(loss: Tensor, mask: Tensor | None) -> Tensor:
    if mask is not None:
        loss = loss * mask.to(loss.dtype)
    return loss.sum()


def semantic_loss(relation: Tensor, semantic: Tensor, mask: Tensor | None = None) -> Tensor:
    """Σ_batch ‖r(u, v) − s(u, v)‖²: SERML's regression of the induced relation onto the review's
    semantic vector (arXiv 2406.10246). Summed like the hinge loss, so that γ weighs the two on
    the same per-pair scale. relation, semantic `[B, d]`; `mask` `[B]` drops pairs.
    """
    loss = ((relation - semantic) ** 2).sum(dim=-1)  # [B]
    if mask is not None:
        loss = loss * mask.to(loss.dtype)
    return loss.sum()
