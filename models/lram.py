"""The latent relation attention memory (LRAM), the only place the key and memory matrices live.

LRAM(a, b) = softmax((a ⊙ b) K) M, the softmax over the N memory slots (LRML, Tay et al.,
WWW 2018, eq. 3-6; reused by HLR/HLR++, Tran et al., RecSys 2021). LRML, HLR and HLR++ hold
one LRAM each; the models read its slot weights to fold arithmetic (see `pair_weights`).
"""

from __future__ import annotations

import torch
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
        """The relation vector of given slot weights: `[..., N] -> [..., d]` (= weights @ M)."""
        return weights @ self.memories

    def pair_weights(self, q: Tensor, x: Tensor) -> Tensor:
        """Slot weights of LRAM(q_c, x_s) for every candidate c and every slot s of each row.

        q: `[C, d]` (candidates shared by the batch) or `[B, C, d]`; x: `[B, S, d]`.
        Returns `[B, C, S, N]`.

        The logits (q_c ⊙ x_s) K equal q_c (diag(x_s) K), so with many candidates they are one
        batched matmul of q against x ⊙ K reshaped to `[B, d, S·N]`, which never materialises
        the `[B, C, S, d]` products. With few candidates (training: C = 2 < N) the direct
        product is the smaller tensor, so that order is used instead.
        """
        n_mem = self.keys.shape[1]
        batch, slots, dim = x.shape
        n_cand = q.shape[-2]
        if n_cand > n_mem:
            keyed = x.transpose(1, 2)[..., None] * self.keys[:, None, :]  # [B, d, S, N]
            logits = torch.matmul(q, keyed.reshape(batch, dim, slots * n_mem))  # [B, C, S·N]
            logits = logits.view(batch, n_cand, slots, n_mem)  # [B, C, S, N]
        else:
            q4 = q[..., :, None, :]  # [B, C, 1, d] or [C, 1, d]
            logits = (q4 * x[:, None, :, :]) @ self.keys  # [B, C, S, N]
        return torch.softmax(logits, dim=-1)
