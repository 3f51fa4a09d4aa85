"""Training losses as pure functions of distances (spotlight `losses.py` style).

The trainer composes them with `RelationalModel.triplet_distances`; the model does not own
its loss.
"""

from __future__ import annotations

import torch
from torch import Tensor


def hinge_loss(d_pos: Tensor, d_neg: Tensor, margin: float, mask: Tensor | None = None) -> Tensor:
    """Σ_batch [d(u, v) − d(u, v⁻) + margin]₊ on squared distances (DESIGN §1, CML/LRML/HLR).

    Summed, not averaged, as the reference (`tf.reduce_sum`), so the gradient scale grows with
    the batch size. `mask` `[B]` (bool or 0/1) drops triplets, e.g. the padding of a last batch.
    """
    loss = torch.relu(d_pos - d_neg + margin)  # [B]
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
