"""LRML, latent relational metric learning (Tay, Tuan, Hui, WWW 2018).

r(u, v) = LRAM(p_u, q_v) = softmax((p_u ⊙ q_v) K) M and d(u, v) = ‖p_u + r − q_v‖² (DESIGN §1).
The paper's training reuses the positive's relation for the negative: `copy=True`, handled by
`RelationalModel.triplet_distances`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from models.base import RelationalModel
from models.config import ModelConfig
from models.lram import LRAM


class LRML(RelationalModel):
    """One relation per (user, item) pair, read from the memory M by the key K."""

    lram: LRAM

    def __init__(self, config: ModelConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.lram = LRAM(config.dim, config.n_memory)

    def _relation(
        self, user_vecs: Tensor, item_vecs: Tensor, hist_vecs: Tensor, hist_mask: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        weights = self.lram.pair_weights(item_vecs, user_vecs[:, None, :])  # [B, C, 1, N]
        return self.lram.read(weights[:, :, 0, :]), None  # [B, C, d]

    def _pair_cost(self, n_hist: int) -> int:
        return max(self.config.dim, self.config.n_memory)

    def _score_chunk(self, state: Any, item_vecs: Tensor) -> Tensor:
        # Same equation, kept in slot space: no [B, C, d] relation is built.
        user_vecs = state[0]  # [B, d]
        weights = self.lram.pair_weights(item_vecs, user_vecs[:, None, :])[:, :, 0, :]  # [B, C, N]
        return self.lram.shared_distance(user_vecs, item_vecs, weights.transpose(0, 1))
