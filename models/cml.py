"""CML, collaborative metric learning (Hsieh et al., WWW 2017): the relation-free baseline.

d(u, v) = ‖p_u − q_v‖² (DESIGN §1 table, r = 0), trained with the same hinge loss and unit-ball
projection as the relational models.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from models.base import RelationalModel


class CML(RelationalModel):
    """r(u, v) = 0: the user vector itself is compared with the item vector."""

    def _relation(
        self, user_vecs: Tensor, item_vecs: Tensor, hist_vecs: Tensor, hist_mask: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        batch, n_cand, dim = user_vecs.shape[0], item_vecs.shape[-2], user_vecs.shape[-1]
        return user_vecs.new_zeros(1, 1, dim).expand(batch, n_cand, dim), None  # [B, C, d]

    def _score_chunk(self, state: Any, item_vecs: Tensor) -> Tensor:
        return _gemm_distance(state[0], item_vecs)

    def _shared_distance(self, user_vecs: Tensor, cand_vecs: Tensor, hist_vecs: Tensor,
                         hist_mask: Tensor, hist_rows: Tensor | None) -> Tensor:
        return _gemm_distance(user_vecs, cand_vecs)


def _gemm_distance(user_vecs: Tensor, item_vecs: Tensor) -> Tensor:
    """‖p − q‖² = ‖p‖² + ‖q‖² − 2 p·q `[B, C]`: one matmul instead of a `[B, C, d]` difference
    (differentiable: the training softmax over shared negatives reads it too)."""
    cross = user_vecs @ item_vecs.T  # [B, C]
    gap = (user_vecs * user_vecs).sum(-1)[:, None] + (item_vecs * item_vecs).sum(-1) - 2 * cross
    return gap.clamp_min(0.0)
