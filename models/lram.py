"""The latent relation attention memory (LRAM), the only place the key and memory matrices live.

LRAM(a, b) = softmax((a ⊙ b) K) M, the softmax over the N memory slots (LRML, Tay et al.,
WWW 2018, eq. 3-6; reused by HLR/HLR++, Tran et al., RecSys 2021). Every relation of LRML, HLR
and HLR++ is a mix of slot weights read through M, so the models work with the weights `[…, N]`
and read M once; this module holds the folded forms they share for full ranking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LRAM(nn.Module):
    """Key matrix K `[d, N]` and memory matrix M `[N, d]`, both initialised N(0, 1/√d).

    The init std 1/√d is the HLR reference's (`random_normal_initializer(0, 1/sqrt(d))` for K
    and M, as for the embedding tables).
    """

    def __init__(self, dim: int, n_memory: int) -> None:
        super().__init__()
        std = dim**-0.5
        self.keys = nn.Parameter(torch.randn(dim, n_memory) * std)  # K [d, N]
        self.memories = nn.Parameter(torch.randn(n_memory, dim) * std)  # M [N, d]

    @property
    def dim(self) -> int:
        return self.keys.shape[0]

    @property
    def n_memory(self) -> int:
        return self.keys.shape[1]

    def weights(self, a: Tensor, b: Tensor) -> Tensor:
        """softmax((a ⊙ b) K) over the N slots: `[..., d] x [..., d] -> [..., N]` (broadcasts)."""
        return torch.softmax((a * b) @ self.keys, dim=-1)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """LRAM(a, b) = softmax((a ⊙ b) K) M: `[..., d] x [..., d] -> [..., d]`."""
        return self.weights(a, b) @ self.memories

    def read(self, weights: Tensor) -> Tensor:
        """The relation of given slot weights: `[..., N] -> [..., d]` (weights @ M)."""
        return weights @ self.memories

    def pair_weights(self, q: Tensor, x: Tensor) -> Tensor:
        """Slot weights of LRAM(q_c, x_s) for every candidate c and every slot s of each row.

        q: `[C, d]` (candidates shared by the batch) or `[B, C, d]`; x: `[B, S, d]`.
        Returns `[B, C, S, N]` (softmax over N of `pair_logits`).
        """
        return torch.softmax(self.pair_logits(q, x), dim=-1)

    def pair_logits(self, q: Tensor, x: Tensor) -> Tensor:
        """(q_c ⊙ x_s) K for every candidate c and slot s: `[B, C, S, N]` (see `pair_weights`).

        The logits are trilinear in q, x and K, so no order of evaluation avoids B·C·S·N·d
        multiply-adds; what differs is what gets materialised and how well the matmuls run:
        - one slot (LRML, the user slot of HLR): (q ⊙ x) is `[B, C, d]`, one `[B·C, d] @ K`;
        - many candidates (C > N, full ranking): K is folded into x, `x ⊙ K` `[B, d, S·N]`,
          one batched matmul against q, which never builds the `[B, C, S, d]` products;
        - few candidates (training: C = 2 < N): K is folded into q, `[B, C·N, d]`, through
          `_FoldedPairLogits`, whose backward is written out (three batched matmuls and two
          small contractions) instead of autograd's chain of broadcasts and copies.
        """
        batch, slots, dim = x.shape
        n_mem = self.keys.shape[1]
        n_cand = q.shape[-2]
        if slots == 1:
            logits = (q * x) @ self.keys  # [B, C, N]
            return logits[:, :, None, :]
        if n_cand > n_mem:
            keyed = x.transpose(1, 2)[..., None] * self.keys[:, None, :]  # [B, d, S, N]
            logits = torch.matmul(q, keyed.reshape(batch, dim, slots * n_mem))  # [B, C, S·N]
            return logits.view(batch, n_cand, slots, n_mem)
        q3 = q if q.dim() == 3 else q.expand(batch, *q.shape)  # [B, C, d]
        logits = _FoldedPairLogits.apply(q3, x, self.keys)  # [B, S, C, N]
        return logits.transpose(1, 2)  # [B, C, S, N], a view

    def shared_distance(self, user_vecs: Tensor, item_vecs: Tensor, weights: Tensor) -> Tensor:
        """‖p_b + w_cb M − q_c‖² `[B, C]` for shared candidates `[C, d]`, weights `[C, B, N]`.

        Expanded as ‖p − q‖² + 2 w·(M(p − q) + ½ M Mᵀ w), so nothing of size `[C, B, d]` is
        built: the full-ranking hot path stays in the N-dim slot space.
        """
        memories = self.memories  # [N, d]
        gap = (
            (item_vecs * item_vecs).sum(-1)[:, None]
            + (user_vecs * user_vecs).sum(-1)[None, :]
            - 2.0 * (item_vecs @ user_vecs.T)
        )  # [C, B]: ‖p − q‖²
        toward = weights @ (0.5 * memories @ memories.T)  # [C, B, N]: ½ M Mᵀ w
        toward += (user_vecs @ memories.T)[None, :, :]
        toward -= (item_vecs @ memories.T)[:, None, :]
        dist = gap + 2.0 * torch.einsum("cbn,cbn->cb", weights, toward)  # [C, B]
        return dist.clamp_min_(0.0).T


# The attention logit of a padding slot: its exp is exactly 0, and unlike -inf it cannot make
# a NaN when multiplied by a slot weight of 0.
PAD_LOGIT = -1e30


@dataclass
class HistoryPairs:
    """LRAM(q_c, q_j) for shared candidates c and a batch's history, by its U distinct items.

    The slot weights of LRAM(q_c, q_j) depend on the item pair only, so for a chunk of C
    candidates they are computed once per distinct history item (`[C, U, N]`, one matmul of
    q against q_u ⊙ K) instead of once per history slot (`[B, C, L, N]`: with 256 ML-1M users
    and L = 50, U ≈ 3.4k against B·L = 12.8k). The per-slot attention logits w · key_b and
    the weighted sums are gathered with `embedding_bag`, which never materialises
    `[B, C, L, N]`. Since slot weights sum to 1, a pad slot whose key is PAD_LOGIT in every
    slot gets the logit PAD_LOGIT: the mask costs no pass over the logits.
    """

    inv: Tensor  # [B, L] index of each slot's item among the U distinct ones
    keyed: Tensor  # [d, U·N] q_u ⊙ K, so that q_c @ keyed = (q_c ⊙ q_u) K
    bag_rows: Tensor  # [B·L, N] rows u·N + n of the transposed weights for slot (b, l)
    bag_weights: Tensor  # [B·L, N] the attention key of slot (b, l); PAD_LOGIT at pads
    n_unique: int
    _mix_rows: Tensor | None = None  # [C·B, L] rows c·U + u of the weights, cached

    @classmethod
    def build(
        cls, lram: LRAM, items: Tensor, hist_rows: Tensor, hist_mask: Tensor, key: Tensor
    ) -> HistoryPairs:
        """items `[V, d]`, hist_rows/hist_mask `[B, L]`, key `[B, N]` (HLR: M p_u, shifted)."""
        n_mem = lram.n_memory
        uniq, inv = torch.unique(hist_rows, return_inverse=True)  # [U], [B, L]
        keyed = items[uniq].T[:, :, None] * lram.keys[:, None, :]  # [d, U, N]
        slots = torch.arange(n_mem, device=inv.device)
        bag_rows = (inv.reshape(-1, 1) * n_mem + slots).contiguous()  # [B·L, N]
        pad = torch.full_like(key[:, None, :], PAD_LOGIT)  # [B, 1, N]
        bag_weights = torch.where(hist_mask[..., None], key[:, None, :], pad).flatten(0, 1)
        return cls(inv, keyed.flatten(1), bag_rows, bag_weights, len(uniq))

    def weights(self, q: Tensor) -> Tensor:
        """Slot weights of LRAM(q_c, q_u) `[C, U, N]` for candidates q `[C, d]`."""
        logits = q @ self.keyed  # [C, U·N]
        return torch.softmax(logits.view(q.shape[0], self.n_unique, -1), dim=-1)

    def logits(self, weights: Tensor) -> Tensor:
        """w(c, j_l) · key_b for every slot `[B, L, C]` (HLR: ⟨LRAM(q_c, q_jl), p_u⟩)."""
        n_cand = weights.shape[0]
        by_row = weights.view(n_cand, -1).T.contiguous()  # [U·N, C]
        out = F.embedding_bag(
            self.bag_rows, by_row, per_sample_weights=self.bag_weights, mode="sum"
        )  # [B·L, C]
        return out.view(*self.inv.shape, n_cand)

    def mix(self, weights: Tensor, attn: Tensor) -> Tensor:
        """Σ_l attn_l w(c, j_l) `[C, B, N]` for per-slot weights attn `[B, L, C]`."""
        n_cand, n_unique, n_mem = weights.shape
        batch, length = self.inv.shape
        if self._mix_rows is None or self._mix_rows.shape[0] < n_cand * batch:
            offsets = torch.arange(n_cand, device=attn.device)[:, None, None] * n_unique
            self._mix_rows = (self.inv[None] + offsets).view(-1, length)
        rows = self._mix_rows[: n_cand * batch]  # [C·B, L]
        per_slot = attn.permute(2, 0, 1).reshape(rows.shape)  # [C·B, L]
        flat = weights.view(-1, n_mem)  # [C·U, N]
        out = F.embedding_bag(rows, flat, per_sample_weights=per_slot, mode="sum")
        return out.view(n_cand, batch, n_mem)


# Rows of a batch that `_FoldedPairLogits` handles at once: its `[rows, d, C·N]` intermediates
# then stay near 1 MB (at d = 100, C = 2, N = 20), inside the L2/L3 caches, instead of 16 MB
# tensors that every pass streams from memory (and page-faults in fresh: on the 2-vCPU machine a
# pass over a freshly allocated 16 MB tensor ran ~5x slower than one over a reused buffer).
_FOLD_FLOATS = 1 << 18


class _FoldedPairLogits(torch.autograd.Function):
    """z[b, s, c, n] = Σ_d x[b, s, d] q[b, c, d] K[d, n] with K folded into q (few candidates).

    With F = q ⊙ K laid out `[B, C·N, d]` and g = ∂L/∂z: forward z = x Fᵀ, backward ∂x = g F
    and Gᵀ = gᵀ x `[B, C·N, d]`, from which ∂q = Σ_n Gᵀ Kᵀ and ∂Kᵀ = Σ_{b,c} Gᵀ q. Measured
    on an ML-1M batch, these orientations run the three batched matmuls 1.4-1.9x faster than
    the transposed ones. Both passes run over row chunks (see `_FOLD_FLOATS`), and the
    backward rebuilds F per chunk instead of keeping it: autograd's own backward of the
    broadcast product, with permute copies of full-batch tensors, cost as much as the three
    matmuls together.
    """

    @staticmethod
    def forward(ctx: Any, q: Tensor, x: Tensor, keys: Tensor) -> Tensor:
        batch, n_cand, dim = q.shape
        n_mem = keys.shape[1]
        out = x.new_empty(batch, x.shape[1], n_cand * n_mem)  # [B, S, C·N]
        keys_t = keys.T
        for rows in _row_chunks(batch, dim * n_cand * n_mem):
            torch.bmm(x[rows], _fold(q[rows], keys_t).transpose(1, 2), out=out[rows])
        ctx.save_for_backward(q, x, keys)
        return out.view(batch, x.shape[1], n_cand, n_mem)  # [B, S, C, N]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        q, x, keys = ctx.saved_tensors
        batch, n_cand, dim = q.shape
        n_mem = keys.shape[1]
        grad = grad.reshape(batch, x.shape[1], n_cand * n_mem)  # [B, S, C·N]
        need_q, need_x, need_k = ctx.needs_input_grad
        keys_t = keys.T  # [N, d]
        grad_q = torch.empty_like(q) if need_q else None
        grad_x = torch.empty_like(x) if need_x else None
        grad_kt = keys_t.new_zeros(keys_t.shape) if need_k else None
        for rows in _row_chunks(batch, dim * n_cand * n_mem):
            g = grad[rows]
            if grad_x is not None:
                torch.bmm(g, _fold(q[rows], keys_t), out=grad_x[rows])
            if grad_q is None and grad_kt is None:
                continue
            outer = torch.bmm(g.transpose(1, 2), x[rows]).view(-1, n_cand, n_mem, dim)
            if grad_q is not None:  # Σ_n Gᵀ[b, c, n, d] K[d, n]
                grad_q[rows] = (outer * keys_t).sum(2)
            if grad_kt is not None:  # Σ_{b,c} Gᵀ[b, c, n, d] q[b, c, d]
                grad_kt += (outer * q[rows, :, None, :]).sum((0, 1))
        return grad_q, grad_x, None if grad_kt is None else grad_kt.T


def _fold(q: Tensor, keys_t: Tensor) -> Tensor:
    """q ⊙ K for each candidate and slot: `[B, C, d] x [N, d] -> [B, C·N, d]`."""
    return (q[:, :, None, :] * keys_t).flatten(1, 2)


def _row_chunks(batch: int, floats_per_row: int) -> list[slice]:
    step = max(1, _FOLD_FLOATS // max(1, floats_per_row))
    return [slice(start, min(start + step, batch)) for start in range(0, batch, step)]
