"""AdaCML, the attentive CML baseline of the HLR paper (reference `AttCML`).

The user is represented by p̃_u = p_u + Σ_j a_j q_j, a = softmax_j ⟨q_j, q_v⟩ over the real
history items j ∈ N_u, and d(u, v) = ‖p̃_u − q_v‖² (DESIGN §1). As a translation,
r(u, v) = Σ_j a_j q_j; an empty history gives r = 0, so p̃_u = p_u.
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.base import RelationalModel, masked_softmax


class AdaCML(RelationalModel):
    """Candidate-dependent attention over the history items, no memory."""

    def _relation(
        self, user_vecs: Tensor, item_vecs: Tensor, hist_vecs: Tensor, hist_mask: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        logits = torch.matmul(item_vecs, hist_vecs.transpose(1, 2))  # [B, C, L]: ⟨q_v, q_j⟩
        attn = masked_softmax(logits, hist_mask[:, None, :])  # [B, C, L]
        # The attention is part of the user vector here, not an explanation of a relation,
        # so `attention()` stays None as for the other non-HLR models (docs/architecture.md).
        return torch.matmul(attn, hist_vecs), None  # [B, C, d]

    def _pair_cost(self, n_hist: int) -> int:
        return max(self.config.dim, n_hist)
