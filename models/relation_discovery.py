"""LRD's relation discovery: a posterior over latent relation types for an item pair, from text.

Trained self-supervised (LRD, arXiv 2403.18348): an extractor reads the text embeddings of two
items (t_v, t_j) and predicts π(v, j), a distribution over N latent relations; a decoder must
reconstruct t_j from t_v and the relation Σ_n π_n R_n, so π has to say how j relates to v. In
relrec the N relations are HLR's N memory slots: `training/text/items.py` pulls HLR's slot
weights softmax((q_v ⊙ q_j) K) for the pair toward π (a KL term), so that item-item relations
learned from co-occurrence also follow what the items' texts say. Training only: the artifact
keeps HLR's own K and M, and serving reads no text.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RelationDiscovery(nn.Module):
    """Extractor [t_v, t_j, t_v ⊙ t_j] -> log π `[b, N]`; decoder (t_v, π R) -> t̂_j `[b, D]`."""

    def __init__(self, text_dim: int, n_relations: int, hidden: int = 128) -> None:
        super().__init__()
        self.extractor = nn.Sequential(nn.Linear(3 * text_dim, hidden), nn.ReLU(),
                                       nn.Linear(hidden, n_relations))
        self.relations = nn.Parameter(torch.randn(n_relations, hidden) * hidden**-0.5)  # R
        self.decoder = nn.Sequential(nn.Linear(text_dim + hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, text_dim))

    def log_posterior(self, head: Tensor, tail: Tensor) -> Tensor:
        """log π(v, j) `[b, N]` for text vectors head t_v and tail t_j `[b, D]`."""
        return F.log_softmax(self.extractor(torch.cat([head, tail, head * tail], -1)), -1)

    def reconstruct(self, head: Tensor, posterior: Tensor) -> Tensor:
        """t̂_j `[b, D]` from t_v and the expected relation embedding π R."""
        return self.decoder(torch.cat([head, posterior @ self.relations], -1))

    def forward(self, head: Tensor, tail: Tensor) -> tuple[Tensor, Tensor]:
        """(log π `[b, N]`, Σ_pairs 1 − cos(t̂_j, t_j)): the posterior and the
        self-supervised reconstruction loss."""
        log_pi = self.log_posterior(head, tail)
        recon = self.reconstruct(head, log_pi.exp())
        return log_pi, (1.0 - F.cosine_similarity(recon, tail, dim=-1)).sum()


def slot_guidance_loss(log_pi: Tensor, slot_logits: Tensor) -> Tensor:
    """Σ_pairs KL(π ‖ w), w = softmax(slot_logits) HLR's slot weights for the same pairs `[b, N]`.

    KL(π ‖ w) rather than the reverse: every relation the text supports must get slot weight,
    while w may stay spread where the text says nothing sharp.
    """
    return (log_pi.exp() * (log_pi - F.log_softmax(slot_logits, -1))).sum()
