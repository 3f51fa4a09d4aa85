"""The latent relation attention memory (LRAM), the only place the key and memory matrices live.

LRAM(a, b) = softmax((a ⊙ b) K) M, the softmax over the N memory slots (LRML, Tay et al.,
WWW 2018, eq. 3-6; reused by HLR/HLR++, Tran et al., RecSys 2021). Every relation of LRML, HLR
and HLR++ is a mix of slot weights read through M, so the models work with the weights `[…, N]`
and read M once; this module holds the folded forms they share for full ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        Returns `[B, C, S, N]`.

        The logits (q_c ⊙ x_s) K equal q_c (diag(x_s) K), so with many candidates they are one
        batched matmul of q against x ⊙ K reshaped to `[B, d, S·N]`, which never materialises
        the `[B, C, S, d]` products. With few candidates (training: C = 2 < N), K is folded
        into q instead (see below).
        """
        n_mem = self.keys.shape[1]
        batch, slots, dim = x.shape
        n_cand = q.shape[-2]
        if n_cand > n_mem:
            keyed = x.transpose(1, 2)[..., None] * self.keys[:, None, :]  # [B, d, S, N]
            logits = torch.matmul(q, keyed.reshape(batch, dim, slots * n_mem))  # [B, C, S·N]
            logits = logits.view(batch, n_cand, slots, n_mem)  # [B, C, S, N]
        else:
            # Few candidates (training: C = 2): fold K into q instead, q_c ⊙ K `[B, C, d, N]`,
            # and the logits are one batched matmul x @ (q ⊙ K) `[B, S, C·N]`. That tensor is
            # S·d / (d·N) = S / N times smaller than the [B, C, S, d] products (2.5x at S = 51,
            # N = 20), and forward + backward measured 1.7x faster on ML-1M-sized batches.
            q3 = q if q.dim() == 3 else q.expand(batch, *q.shape)  # [B, C, d]
            keyed = q3[..., None] * self.keys  # [B, C, d, N]
            keyed = keyed.permute(0, 2, 1, 3).reshape(batch, dim, n_cand * n_mem)
            logits = torch.matmul(x, keyed).view(batch, slots, n_cand, n_mem)  # [B, S, C, N]
            logits = logits.transpose(1, 2)  # [B, C, S, N]
        return torch.softmax(logits, dim=-1)

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
