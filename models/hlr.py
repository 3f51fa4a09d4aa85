"""HLR and HLR++, hierarchical latent relations (Tran, Salha-Galvan, Hennequin, Moussallam,
RecSys 2021; reference github deezer/recsys21-hlr, classes `HLRE` and `JUPITER`).

HLR: x = [p_u, q_j1 … q_jL], r = Σ_k β_k LRAM(q_v, x_k), β = softmax_k ⟨LRAM(q_v, x_k), p_u⟩
over the user slot and the ℓ real history items. HLR++ adds to HLR's item-item branch (over
[q_j1 … q_jL] only) a user-preference branch Σ_k α_k LRAM(p_u, y_k), y = [q_v, q_j1 … q_jL],
α = softmax_k ⟨LRAM(p_u, y_k), q_v⟩. Both: d(u, v) = ‖p_u + r − q_v‖² (DESIGN §1).

Every relation here is (slot weights) @ M, so the code works with the weights `[…, N]` and
reads M once: ⟨w M, p_u⟩ = w · (M p_u), and Σ_k β_k (w_k M) = (Σ_k β_k w_k) M. This keeps the
largest tensor at `[B, C, L, N]` instead of `[B, C, L, d]`. `score_all` evaluates the same
equations with candidates shared by the batch (`_score_chunk`): the item-pair weights come
from `HistoryPairs`, and the distance stays in slot space (`LRAM.shared_distance`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from models.base import RelationalModel, masked_softmax
from models.config import ModelConfig
from models.lram import LRAM, PAD_LOGIT, HistoryPairs

# An attention logit w · key is a convex combination of the key's entries (w is a softmax), so
# `score_all` shifts it by max(key) instead of taking a row max: exp ≤ 1 with no extra pass.
# If max(key) − min(key) passes this, exp could underflow to 0 in every slot of a row, and the
# exact row max is used instead (e^-60 ≈ 1e-26 is still far from float32's 1e-38).
_SAFE_SPREAD = 60.0


@dataclass
class _ScoringState:
    """What `score_all` computes once per batch of users for HLR and HLR++."""

    user_vecs: Tensor  # [B, d]
    mask: Tensor  # [B, L]
    user_key: Tensor  # [B, N]: M p_u − max_n (M p_u)_n, the shifted attention key
    exact: bool  # whether the spread of M p_u asks for the exact shift
    keyed_user: Tensor  # [d, B·N]: p_u ⊙ K
    pairs: HistoryPairs | None  # None when no history column is left
    hist_w: Tensor | None = None  # [B, L, N+1]: LRAM(p_u, q_j) slot weights, pad bias (HLR++)


def _exp_attention_(
    logits: Tensor, extra: Tensor | None, exact: bool
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Masked softmax over dim 1, unnormalised and in place, for the `score_all` hot path.

    logits `[B, L, C]` (overwritten) are already shifted by an upper bound (so exp ≤ 1) and
    hold PAD_LOGIT at pads; extra `[B, C]` is one more, always present slot (HLR's user slot)
    or None. Returns exp(logits) (0 at pads), exp(extra) or None, and 1/Σ `[B, C]`, so the
    caller divides its `[C, B, N]` mix once. A row with no slot gets 1/Σ = 0: it adds nothing.
    """
    if exact:
        empty = logits.new_full((logits.shape[0], logits.shape[2]), PAD_LOGIT)
        top = logits.amax(dim=1) if logits.shape[1] > 0 else empty  # [B, C]
        if extra is not None:
            top = torch.maximum(top, extra)
        top = torch.where(top > PAD_LOGIT / 2, top, torch.zeros_like(top))
        logits.sub_(top[:, None, :])
        extra = None if extra is None else extra - top
    expd = logits.exp_()
    total = expd.sum(dim=1)  # [B, C]
    extra_exp = None if extra is None else extra.exp()
    if extra_exp is not None:
        total += extra_exp
    inv_total = torch.where(total > 0, total.reciprocal(), torch.zeros_like(total))
    return expd, extra_exp, inv_total


class HLR(RelationalModel):
    """Item-item relations between the candidate and each history item, attended by the user."""

    lram: LRAM

    def __init__(self, config: ModelConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.lram = LRAM(config.dim, config.n_memory)

    def _user_weights(self, user_vecs: Tensor, item_vecs: Tensor) -> Tensor:
        """Slot weights of LRAM(q_v, p_u) = LRAM(p_u, q_v) `[B, C, N]` (the user slot of HLR,
        the candidate slot of HLR++'s preference branch: ⊙ commutes, so they are one tensor)."""
        return self.lram.pair_weights(item_vecs, user_vecs[:, None, :])[:, :, 0, :]

    def _history_branch(
        self, user_mem: Tensor, weights: Tensor, hist_mask: Tensor, user_w: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """Σ_k β_k w_k `[B, C, N]` and β over the history `[B, C, L]`.

        w_k are the slot weights of LRAM(q_v, x_k) (`weights` `[B, C, L, N]` for the history,
        `user_w` for the user slot), β = masked softmax_k ⟨LRAM(q_v, x_k), p_u⟩ = w_k · (M p_u)
        (reference `_attentive_vectors(relations, ex_vectors=u_vectors)`), over the history
        slots and, when `user_w` is given (HLR), the user slot in front of them.
        The user slot is kept apart from the history instead of concatenated to it: its
        weights are one small matmul, and no `[B, L+1, d]` copy of the history is made.
        """
        logits = torch.einsum("bcln,bn->bcl", weights, user_mem)  # [B, C, L]
        mask = hist_mask[:, None, :]  # [B, 1, L]
        if user_w is None:  # HLR++'s item-item branch: an empty history contributes 0
            beta = masked_softmax(logits, mask)
            return torch.einsum("bcl,bcln->bcn", beta, weights), beta
        user_logit = torch.einsum("bcn,bn->bc", user_w, user_mem)[..., None]  # [B, C, 1]
        user_slot = hist_mask.new_ones(1, 1, 1).expand(*mask.shape[:2], 1)
        beta = masked_softmax(torch.cat([user_logit, logits], dim=-1),
                              torch.cat([user_slot, mask], dim=-1), never_empty=True)
        mixed = beta[..., :1] * user_w + torch.einsum("bcl,bcln->bcn", beta[..., 1:], weights)
        return mixed, beta[..., 1:]

    def _relation(
        self, user_vecs: Tensor, item_vecs: Tensor, hist_vecs: Tensor, hist_mask: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        user_w = self._user_weights(user_vecs, item_vecs)  # [B, C, N]
        if hist_vecs.shape[1] == 0:  # the user slot alone: β = 1 on it
            return self.lram.read(user_w), user_w.new_zeros(*user_w.shape[:2], 0)
        user_mem = user_vecs @ self.lram.memories.T  # [B, N]: M p_u
        weights = self.lram.pair_weights(item_vecs, hist_vecs)  # [B, C, L, N]
        mixed, beta = self._history_branch(user_mem, weights, hist_mask, user_w)
        return self.lram.read(mixed), beta  # [B, C, d], [B, C, L]

    def _pair_cost(self, n_hist: int) -> int:
        return max(self.config.dim, (n_hist + 1) * self.config.n_memory)

    def _shared_distance(self, user_vecs: Tensor, cand_vecs: Tensor, hist_vecs: Tensor,
                         hist_mask: Tensor, hist_rows: Tensor | None) -> Tensor:
        """HLR's distances `[B, S]` to S candidates shared by a training batch (the softmax).

        The item-item slot weights LRAM(q_c, q_j) depend on the item pair only, so they are
        computed once per distinct history item of the batch (`HistoryPairs`, as `score_all`
        does) instead of once per history slot: `[S, U, N]` against `[B, S, L, N]`. Unlike
        `_score_chunk` this path keeps autograd: a plain softmax, no in-place exp.
        """
        if hist_rows is None or hist_mask.shape[1] == 0:
            return super()._shared_distance(user_vecs, cand_vecs, hist_vecs, hist_mask, hist_rows)
        user_mem = user_vecs @ self.lram.memories.T  # [B, N]: M p_u
        pairs = HistoryPairs.build(self.lram, self.item_emb.weight, hist_rows, hist_mask,
                                   user_mem)
        weights = pairs.weights(cand_vecs)  # [S, U, N]
        keyed_user = user_vecs.T[:, :, None] * self.lram.keys[:, None, :]  # [d, B, N]
        user_w = torch.softmax((cand_vecs @ keyed_user.flatten(1)).view(
            cand_vecs.shape[0], user_vecs.shape[0], -1), dim=-1)  # [S, B, N]
        user_logit = torch.einsum("sbn,bn->bs", user_w, user_mem)  # [B, S]
        logits = torch.cat([user_logit[:, None, :], pairs.logits(weights)], dim=1)  # [B, 1+L, S]
        beta = torch.softmax(logits, dim=1)  # pads hold PAD_LOGIT: exactly 0
        mixed = beta[:, 0, :].T[..., None] * user_w + pairs.mix(weights, beta[:, 1:, :])
        return self.lram.shared_distance(user_vecs, cand_vecs, mixed)  # [B, S]

    # -- full ranking: the same equations, with candidates shared by the batch -------------------

    def _prepare_scoring(
        self, user_vecs: Tensor, hist_rows: Tensor | None, hist_mask: Tensor | None
    ) -> tuple[_ScoringState, int]:
        _, mask = self._history(user_vecs, hist_rows, hist_mask)  # [B, L]
        user_mem = user_vecs @ self.lram.memories.T  # [B, N]: M p_u
        # ⟨LRAM(q, x), p_u⟩ = w · (M p_u) with w on the simplex: at most max_n (M p_u)_n.
        top, bottom = user_mem.amax(dim=-1), user_mem.amin(dim=-1)  # [B]
        exact = bool((top - bottom).max() > _SAFE_SPREAD)
        user_key = user_mem - top[:, None]  # [B, N]
        keyed_user = user_vecs.T[:, :, None] * self.lram.keys[:, None, :]  # [d, B, N]
        pairs = None
        if hist_rows is not None and mask.shape[1] > 0:
            items = self.item_emb.weight
            pairs = HistoryPairs.build(self.lram, items, hist_rows, mask, user_key)
        batch, length = mask.shape
        n_mem = self.config.n_memory
        n_unique = 0 if pairs is None else pairs.n_unique
        # Floats per candidate: the pair weights and their transpose, the [B, L] logits and
        # mix rows/weights, a few [B, N] mixes.
        per_item = 3 * n_unique * n_mem + batch * (6 * length + 6 * n_mem)
        state = _ScoringState(user_vecs, mask, user_key, exact, keyed_user.flatten(1), pairs)
        return state, per_item

    def _user_slot(self, state: _ScoringState, item_vecs: Tensor) -> Tensor:
        """Slot weights of LRAM(q_c, p_u) = LRAM(p_u, q_c) `[C, B, N]`."""
        logits = item_vecs @ state.keyed_user  # [C, B·N]
        return torch.softmax(logits.view(item_vecs.shape[0], state.user_vecs.shape[0], -1), -1)

    def _score_chunk(self, state: _ScoringState, item_vecs: Tensor) -> Tensor:
        user_w = self._user_slot(state, item_vecs)  # [C, B, N]
        if state.pairs is None:  # the user slot alone: β = 1 on it
            return self.lram.shared_distance(state.user_vecs, item_vecs, user_w)
        user_logit = torch.einsum("cbn,bn->bc", user_w, state.user_key)  # [B, C]
        weights = state.pairs.weights(item_vecs)  # [C, U, N]
        hist_logits = state.pairs.logits(weights)  # [B, L, C]
        hist_exp, user_exp, inv_total = _exp_attention_(hist_logits, user_logit, state.exact)
        assert user_exp is not None
        mixed = user_exp.T[..., None] * user_w + state.pairs.mix(weights, hist_exp)  # [C, B, N]
        mixed *= inv_total.T[..., None]
        return self.lram.shared_distance(state.user_vecs, item_vecs, mixed)


class HLRPlusPlus(HLR):
    """HLR's item-item branch over the history only, plus a user-preference branch.

    As in the reference (`JUPITER`), the two relations share one K and one M and are summed:
    r = Σ_k β_k LRAM(q_v, q_jk) + Σ_k α_k LRAM(p_u, y_k). `attention()` reports β.
    """

    # The softmax's shared candidates go through `_relation` (HLR's pair path is HLR's alone).
    _shared_distance = RelationalModel._shared_distance

    def _relation(
        self, user_vecs: Tensor, item_vecs: Tensor, hist_vecs: Tensor, hist_mask: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        user_w = self._user_weights(user_vecs, item_vecs)  # [B, C, N]: LRAM(p_u, q_v)
        if hist_vecs.shape[1] == 0:  # no history: α = 1 on the candidate slot, β = 0
            return self.lram.read(user_w), user_w.new_zeros(*user_w.shape[:2], 0)
        # LRAM(q_v, q_j) for the item-item branch and LRAM(p_u, q_j) for the preference branch
        # are the same pair logits with p_u as one more candidate: one pass over the history.
        batch, n_cand = user_w.shape[:2]
        cands = item_vecs if item_vecs.dim() == 3 else item_vecs.expand(batch, *item_vecs.shape)
        weights = self.lram.pair_weights(torch.cat([cands, user_vecs[:, None, :]], 1), hist_vecs)
        hist_w = weights[:, n_cand]  # [B, L, N]: LRAM(p_u, q_j)
        pref_mixed = self._preference_mix(user_w, hist_w, item_vecs, hist_mask)
        user_mem = user_vecs @ self.lram.memories.T  # [B, N]: M p_u
        item_mixed, beta = self._history_branch(user_mem, weights[:, :n_cand], hist_mask, None)
        return self.lram.read(item_mixed + pref_mixed), beta  # [B, C, d], [B, C, L]

    def _preference_mix(
        self, cand_w: Tensor, hist_w: Tensor, item_vecs: Tensor, hist_mask: Tensor
    ) -> Tensor:
        """Σ_k α_k w'_k `[B, C, N]`, w'_k the slot weights of LRAM(p_u, y_k), y = [q_v, q_j…].

        cand_w `[B, C, N]` is slot 0 (the candidate); the history slots hist_w `[B, L, N]` do
        not depend on the candidate, so α's logits ⟨LRAM(p_u, q_j), q_v⟩ = w'_j · (M q_v) are
        one matmul. The candidate slot is always there, so α's softmax never has an empty row.
        """
        item_mem = item_vecs @ self.lram.memories.T  # [B, C, N] or [C, N]: M q_v
        cand_logit = (cand_w * item_mem).sum(-1, keepdim=True)  # [B, C, 1]
        hist_logits = torch.matmul(item_mem, hist_w.transpose(1, 2))  # [B, C, L]
        cand_slot = hist_mask.new_ones(1, 1, 1).expand(hist_mask.shape[0], 1, 1)  # [B, 1, 1]
        alpha = masked_softmax(torch.cat([cand_logit, hist_logits], dim=-1),
                               torch.cat([cand_slot, hist_mask[:, None, :]], dim=-1),
                               never_empty=True)
        return alpha[..., :1] * cand_w + torch.matmul(alpha[..., 1:], hist_w)  # [B, C, N]

    def _pair_cost(self, n_hist: int) -> int:
        return max(self.config.dim, max(n_hist, 1) * self.config.n_memory)

    def _prepare_scoring(
        self, user_vecs: Tensor, hist_rows: Tensor | None, hist_mask: Tensor | None
    ) -> tuple[_ScoringState, int]:
        state, per_item = super()._prepare_scoring(user_vecs, hist_rows, hist_mask)
        hist_vecs, mask = self._history(user_vecs, hist_rows, hist_mask)  # [B, L, d]
        hist_w = self.lram.weights(user_vecs[:, None, :], hist_vecs)  # [B, L, N]
        pad_bias = torch.where(mask, 0.0, PAD_LOGIT).to(hist_w.dtype)  # [B, L]
        state.hist_w = torch.cat([hist_w, pad_bias[..., None]], dim=-1)  # [B, L, N+1]
        return state, per_item

    def _score_chunk(self, state: _ScoringState, item_vecs: Tensor) -> Tensor:
        assert state.hist_w is not None  # set by _prepare_scoring
        n_cand = item_vecs.shape[0]
        # User-preference branch: α over [q_c, q_j1 … q_jL], logits w'_k · (M q_c), shifted
        # by max_n (M q_c)_n; the extra column of hist_w adds PAD_LOGIT at pads.
        cand_mem = item_vecs @ self.lram.memories.T  # [C, N]: M q_c
        top, bottom = cand_mem.amax(dim=-1), cand_mem.amin(dim=-1)  # [C]
        cand_key = cand_mem - top[:, None]  # [C, N]
        cand_w = self._user_slot(state, item_vecs)  # [C, B, N]
        cand_logit = torch.einsum("cbn,cn->bc", cand_w, cand_key)  # [B, C]
        key_t = torch.cat([cand_key.T, cand_key.new_ones(1, n_cand)])  # [N+1, C]
        hist_logits = torch.matmul(state.hist_w, key_t)  # [B, L, C]
        exact = bool((top - bottom).max() > _SAFE_SPREAD)
        hist_exp, cand_exp, inv_total = _exp_attention_(hist_logits, cand_logit, exact)
        assert cand_exp is not None
        hist_w = state.hist_w[..., :-1]  # [B, L, N]
        pref = torch.bmm(hist_exp.transpose(1, 2), hist_w).transpose(0, 1)  # [C, B, N]
        mixed = (cand_exp.T[..., None] * cand_w + pref) * inv_total.T[..., None]
        # Item-item branch: β over the history only (0 for an empty history).
        if state.pairs is not None:
            weights = state.pairs.weights(item_vecs)  # [C, U, N]
            logits = state.pairs.logits(weights)  # [B, L, C]
            item_exp, _, item_inv = _exp_attention_(logits, None, state.exact)
            mixed += state.pairs.mix(weights, item_exp) * item_inv.T[..., None]
        return self.lram.shared_distance(state.user_vecs, item_vecs, mixed)
