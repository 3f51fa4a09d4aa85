"""HLR and HLR++, hierarchical latent relations (Tran, Salha-Galvan, Hennequin, Moussallam,
RecSys 2021; reference github deezer/recsys21-hlr, classes `HLRE` and `JUPITER`).

HLR: x = [p_u, q_j1 … q_jL], r = Σ_k β_k LRAM(q_v, x_k), β = softmax_k ⟨LRAM(q_v, x_k), p_u⟩
over the user slot and the ℓ real history items. HLR++ adds to HLR's item-item branch (over
[q_j1 … q_jL] only) a user-preference branch Σ_k α_k LRAM(p_u, y_k), y = [q_v, q_j1 … q_jL],
α = softmax_k ⟨LRAM(p_u, y_k), q_v⟩. Both: d(u, v) = ‖p_u + r − q_v‖² (DESIGN §1).

Every relation here is (slot weights) @ M, so the code works with the weights `[…, N]` and
reads M once: ⟨w M, p_u⟩ = w · (M p_u), and Σ_k β_k (w_k M) = (Σ_k β_k w_k) M. This keeps the
largest tensor at `[B, C, L, N]` instead of `[B, C, L, d]`. Full ranking (`score_all`) goes
further, see `_HistoryPairs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from models.base import RelationalModel, masked_softmax
from models.config import ModelConfig
from models.lram import LRAM


@dataclass
class _HistoryPairs:
    """A batch's history for scoring shared candidates, by its U distinct items.

    The slot weights of LRAM(q_c, q_j) depend on the item pair only, so for a chunk of C
    candidates they are computed once per distinct history item (`[C, U, N]`, one matmul of
    q against x_u ⊙ K) instead of once per history slot (`[B, C, L, N]`, ~4x more with
    L = 50 and 256 users on ML-1M). The per-slot attention logits and weighted sums are then
    gathered with `embedding_bag`, which never materialises `[B, C, L, N]`.
    """

    inv: Tensor  # [B, L] index of each slot's item among the U distinct ones
    keyed: Tensor  # [d, U·N] x_u ⊙ K, so that q @ keyed = (q ⊙ x_u) K
    bag_rows: Tensor  # [B·L, N] rows u·N + n of the transposed weights for slot (b, l)
    bag_weights: Tensor  # [B·L, N] (M p_u)_n for slot (b, l)
    n_unique: int

    @classmethod
    def build(cls, lram: LRAM, items: Tensor, hist_rows: Tensor, user_mem: Tensor) -> _HistoryPairs:
        n_mem = lram.n_memory
        uniq, inv = torch.unique(hist_rows, return_inverse=True)  # [U], [B, L]
        keyed = items[uniq].T[:, :, None] * lram.keys[:, None, :]  # [d, U, N]
        slots = torch.arange(n_mem, device=inv.device)
        bag_rows = (inv.reshape(-1, 1) * n_mem + slots).contiguous()  # [B·L, N]
        batch, length = inv.shape
        bag_weights = user_mem[:, None, :].expand(batch, length, n_mem).reshape(-1, n_mem)
        return cls(inv, keyed.reshape(keyed.shape[0], -1), bag_rows, bag_weights, len(uniq))

    def weights(self, q: Tensor) -> Tensor:
        """Slot weights of LRAM(q_c, x_u) `[C, U, N]` for candidates q `[C, d]`."""
        logits = q @ self.keyed  # [C, U·N]
        return torch.softmax(logits.view(q.shape[0], self.n_unique, -1), dim=-1)

    def logits(self, weights: Tensor) -> Tensor:
        """⟨LRAM(q_c, q_jl), p_u⟩ = w · (M p_u) for every slot `[B, L, C]`."""
        n_cand = weights.shape[0]
        by_row = weights.view(n_cand, -1).T.contiguous()  # [U·N, C]
        out = F.embedding_bag(
            self.bag_rows, by_row, per_sample_weights=self.bag_weights, mode="sum"
        )
        return out.view(*self.inv.shape, n_cand)  # [B, L, C]

    def mix(self, weights: Tensor, beta: Tensor) -> Tensor:
        """Σ_l β_l w(c, j_l) `[C, B, N]` for attention β `[B, L, C]` over the slots."""
        n_cand, n_unique, n_mem = weights.shape
        offsets = torch.arange(n_cand, device=beta.device)[:, None, None] * n_unique
        rows = (self.inv[None] + offsets).view(-1, self.inv.shape[1])  # [C·B, L]
        per_slot = beta.permute(2, 0, 1).reshape(rows.shape)  # [C·B, L]
        flat = weights.view(-1, n_mem)  # [C·U, N]
        out = F.embedding_bag(rows, flat, per_sample_weights=per_slot, mode="sum")
        return out.view(n_cand, -1, n_mem)  # [C, B, N]


@dataclass
class _ScoringState:
    """What `score_all` computes once per batch of users for HLR and HLR++."""

    user_vecs: Tensor  # [B, d]
    mask: Tensor  # [B, L]
    user_mem: Tensor  # [B, N]: M p_u
    keyed_user: Tensor  # [d, B·N]: p_u ⊙ K
    pairs: _HistoryPairs | None  # None when no history column is left
    hist_w: Tensor | None = None  # [B, L, N]: LRAM(p_u, q_j) slot weights (HLR++)


class HLR(RelationalModel):
    """Item-item relations between the candidate and each history item, attended by the user."""

    lram: LRAM

    def __init__(self, config: ModelConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.lram = LRAM(config.dim, config.n_memory)

    def _item_branch(
        self, user_vecs: Tensor, item_vecs: Tensor, slot_vecs: Tensor, slot_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Σ_k β_k w_k over the slots (weights `[B, C, N]`) and β `[B, C, S]`.

        w_k are the slot weights of LRAM(q_v, x_k), β = masked softmax_k ⟨LRAM(q_v, x_k), p_u⟩
        (reference `_attentive_vectors(relations, ex_vectors=u_vectors)`).
        """
        weights = self.lram.pair_weights(item_vecs, slot_vecs)  # [B, C, S, N]
        user_mem = user_vecs @ self.lram.memories.T  # [B, N]: M p_u
        logits = torch.matmul(weights, user_mem[:, None, :, None])[..., 0]  # [B, C, S]
        beta = masked_softmax(logits, slot_mask[:, None, :])  # [B, C, S]
        mixed = torch.matmul(beta[..., None, :], weights)[..., 0, :]  # [B, C, N]
        return mixed, beta

    def _relation(
        self, user_vecs: Tensor, item_vecs: Tensor, hist_vecs: Tensor, hist_mask: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        slot_vecs = torch.cat([user_vecs[:, None, :], hist_vecs], dim=1)  # [B, L+1, d]
        slot_mask = torch.cat([hist_mask.new_ones(hist_mask.shape[0], 1), hist_mask], dim=1)
        mixed, beta = self._item_branch(user_vecs, item_vecs, slot_vecs, slot_mask)
        return self.lram.read(mixed), beta[..., 1:]  # [B, C, d], [B, C, L]

    def _pair_cost(self, n_hist: int) -> int:
        return max(self.config.dim, (n_hist + 1) * self.config.n_memory)

    # -- full ranking: the same equations, with candidates shared by the batch -------------------

    def _prepare_scoring(
        self, user_vecs: Tensor, hist_rows: Tensor | None, hist_mask: Tensor | None
    ) -> tuple[Any, int]:
        _, mask = self._history(user_vecs, hist_rows, hist_mask)  # [B, L]
        user_mem = user_vecs @ self.lram.memories.T  # [B, N]: M p_u
        keyed_user = user_vecs.T[:, :, None] * self.lram.keys[:, None, :]  # [d, B, N]
        pairs = None
        if hist_rows is not None and mask.shape[1] > 0:
            pairs = _HistoryPairs.build(self.lram, self.item_emb.weight, hist_rows, user_mem)
        batch, length = mask.shape
        unique = 0 if pairs is None else pairs.n_unique
        per_item = 3 * unique * self.config.n_memory + batch * (4 * length + 3 * self.config.dim)
        keyed_user = keyed_user.reshape(self.config.dim, -1)
        return _ScoringState(user_vecs, mask, user_mem, keyed_user, pairs), per_item

    def _user_slot(self, state: _ScoringState, item_vecs: Tensor) -> Tensor:
        """Slot weights of LRAM(q_c, p_u) = LRAM(p_u, q_c) `[C, B, N]`."""
        logits = item_vecs @ state.keyed_user  # [C, B·N]
        return torch.softmax(logits.view(item_vecs.shape[0], state.user_vecs.shape[0], -1), -1)

    def _score_chunk(self, state: _ScoringState, item_vecs: Tensor) -> Tensor:
        user_vecs, mask, pairs = state.user_vecs, state.mask, state.pairs
        user_w = self._user_slot(state, item_vecs)  # [C, B, N]
        user_logit = (user_w * state.user_mem).sum(-1).T  # [B, C]
        if pairs is None:  # only the user slot: β = 1 on it
            mixed = user_w
        else:
            weights = pairs.weights(item_vecs)  # [C, U, N]
            logits = torch.cat([user_logit[:, None, :], pairs.logits(weights)], dim=1)
            slot_mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)  # [B, L+1]
            beta = masked_softmax(logits, slot_mask[:, :, None], dim=1)  # [B, L+1, C]
            mixed = beta[:, 0].T[..., None] * user_w + pairs.mix(weights, beta[:, 1:])
        return _shared_distance(user_vecs, self.lram.read(mixed), item_vecs)


class HLRPlusPlus(HLR):
    """HLR's item-item branch over the history only, plus a user-preference branch.

    As in the reference (`JUPITER`), the two relations share one K and one M and are summed:
    r = Σ_k β_k LRAM(q_v, q_jk) + Σ_k α_k LRAM(p_u, y_k).
    """

    def _relation(
        self, user_vecs: Tensor, item_vecs: Tensor, hist_vecs: Tensor, hist_mask: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        # Item-item branch; an empty history gives β = 0 and so contributes 0.
        item_mixed, beta = self._item_branch(user_vecs, item_vecs, hist_vecs, hist_mask)
        cand_w = self.lram.pair_weights(item_vecs, user_vecs[:, None, :])[:, :, 0, :]  # [B, C, N]
        hist_w = self.lram.weights(user_vecs[:, None, :], hist_vecs)  # [B, L, N]
        pref_mixed = self._preference_mix(cand_w, hist_w, item_vecs, hist_mask)
        return self.lram.read(item_mixed + pref_mixed), beta  # [B, C, d], [B, C, L]

    def _preference_mix(
        self, cand_w: Tensor, hist_w: Tensor, item_vecs: Tensor, hist_mask: Tensor
    ) -> Tensor:
        """Σ_k α_k w'_k `[B, C, N]`, w'_k the slot weights of LRAM(p_u, y_k), y = [q_v, q_j…].

        cand_w `[B, C, N]` is slot 0 (the candidate); the history slots hist_w `[B, L, N]` do
        not depend on the candidate, so α's logits ⟨LRAM(p_u, q_j), q_v⟩ are one matmul.
        """
        memories = self.lram.memories  # [N, d]
        cand_logit = (cand_w * (item_vecs @ memories.T)).sum(-1, keepdim=True)  # [B, C, 1]
        hist_logits = torch.matmul(item_vecs, (hist_w @ memories).transpose(1, 2))  # [B, C, L]
        logits = torch.cat([cand_logit, hist_logits], dim=-1)  # [B, C, L+1]
        cand_slot = hist_mask.new_ones(hist_mask.shape[0], 1)  # [B, 1]
        alpha = masked_softmax(logits, torch.cat([cand_slot, hist_mask], dim=1)[:, None, :])
        return alpha[..., :1] * cand_w + torch.matmul(alpha[..., 1:], hist_w)  # [B, C, N]

    def _pair_cost(self, n_hist: int) -> int:
        return max(self.config.dim, max(n_hist, 1) * self.config.n_memory)

    def _prepare_scoring(
        self, user_vecs: Tensor, hist_rows: Tensor | None, hist_mask: Tensor | None
    ) -> tuple[Any, int]:
        state, per_item = super()._prepare_scoring(user_vecs, hist_rows, hist_mask)
        hist_vecs, _ = self._history(user_vecs, hist_rows, hist_mask)  # [B, L, d]
        state.hist_w = self.lram.weights(user_vecs[:, None, :], hist_vecs)  # [B, L, N]
        return state, per_item

    def _score_chunk(self, state: _ScoringState, item_vecs: Tensor) -> Tensor:
        user_vecs, mask, pairs, hist_w = state.user_vecs, state.mask, state.pairs, state.hist_w
        assert hist_w is not None  # set by _prepare_scoring
        cand_w = self._user_slot(state, item_vecs).transpose(0, 1)  # [B, C, N]
        mixed = self._preference_mix(cand_w, hist_w, item_vecs, mask)  # [B, C, N]
        if pairs is not None:
            weights = pairs.weights(item_vecs)  # [C, U, N]
            beta = masked_softmax(pairs.logits(weights), mask[:, :, None], dim=1)  # [B, L, C]
            mixed = mixed + pairs.mix(weights, beta).transpose(0, 1)
        return _shared_distance(user_vecs, self.lram.read(mixed).transpose(0, 1), item_vecs)


def _shared_distance(user_vecs: Tensor, relation: Tensor, item_vecs: Tensor) -> Tensor:
    """‖p_u + r − q_c‖² `[B, C]` for relation `[C, B, d]` and shared candidates `[C, d]`."""
    diff = user_vecs[None, :, :] + relation - item_vecs[:, None, :]  # [C, B, d]
    return (diff * diff).sum(dim=-1).T
