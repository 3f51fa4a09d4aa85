"""TrainDataset: the training positives and each user's item set, served as vectorised batches.

Reads the train `Interactions` of a `Split`; yields `Batch`es of torch tensors (user, positive,
negative, capped history without the positive) that the trainer feeds to the model. Batches are
built by the sampler's vectorised functions from one seeded rng, and sharded by rank for
DistributedDataParallel (every rank sees the same permutation, takes its own slice).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from training.interactions import Interactions
from training.sampler import NegativeSampler, inverse_popularity_weights, sample_history


@dataclass(frozen=True)
class Batch:
    """One training batch; histories exclude the positive item (DESIGN §1)."""

    user_rows: torch.Tensor  # [B]
    pos_rows: torch.Tensor  # [B]
    neg_rows: torch.Tensor  # [B], or [B, n] with several sampled negatives; [S] when shared
    hist_rows: torch.Tensor  # [B, L]
    hist_mask: torch.Tensor  # [B, L] bool
    # Shared negatives (the sampled softmax): neg_rows [S] serve the whole batch and
    # neg_hits [B, S] marks those that are the row's own training items, left out of its loss.
    neg_hits: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        hits = None if self.neg_hits is None else self.neg_hits.to(device, non_blocking=True)
        return Batch(*(t.to(device, non_blocking=True) for t in (
            self.user_rows, self.pos_rows, self.neg_rows, self.hist_rows, self.hist_mask)),
            neg_hits=hits)


class TrainDataset:
    """Training positives of one split plus the CSR of each user's training items."""

    def __init__(self, train: Interactions, l_max: int, uses_history: bool = True,
                 history_sampling: str = "uniform", history_dropout: float = 0.0) -> None:
        csr = train.to_csr()
        csr.sort_indices()
        self.indptr = csr.indptr.astype(np.int64)
        self.indices = csr.indices.astype(np.int64)
        self.n_users, self.n_items = csr.shape
        self.l_max = l_max
        self.history_dropout = history_dropout  # training batches only, never evaluation
        self.uses_history = uses_history
        # unique positives: duplicates in the log would weigh some pairs twice
        rows, cols = csr.nonzero()
        self.user_rows = rows.astype(np.int64)
        self.item_rows = cols.astype(np.int64)
        self.popularity = np.bincount(self.item_rows, minlength=self.n_items)
        self.negatives = NegativeSampler(self.indptr, self.indices, self.n_items)
        self.item_weights = (inverse_popularity_weights(self.popularity)
                             if history_sampling == "inverse_popularity" else None)

    def __len__(self) -> int:
        return len(self.user_rows)

    def n_batches(self, batch_size: int, world_size: int = 1) -> int:
        per_rank = -(-len(self) // world_size)
        return -(-per_rank // batch_size)

    def histories(self, rng: np.random.Generator, user_rows: np.ndarray,
                  exclude_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Capped histories [B, L] and mask; empty (all-pad) for models without history."""
        if not self.uses_history:  # zero-width: no [B, L, d] gather for CML and LRML
            b = len(user_rows)
            return np.zeros((b, 0), np.int64), np.zeros((b, 0), bool)
        return sample_history(rng, user_rows, self.indptr, self.indices, self.l_max,
                              exclude_rows=exclude_rows, item_weights=self.item_weights)

    def batches(self, rng: np.random.Generator, batch_size: int, rank: int = 0,
                world_size: int = 1, n_negatives: int = 1,
                shared: bool = False) -> Iterator[Batch]:
        """One epoch of batches for this rank, in a random order drawn from `rng`.

        `shared`: the n negatives are one set of distinct items for the whole batch (the
        sampled softmax), with the hits on each row's own training items marked.

        For DDP all ranks must pass rngs seeded alike for the permutation; the shard is padded
        by wrapping around so every rank runs the same number of steps (DDP needs that).
        """
        order = rng.permutation(len(self))
        per_rank = -(-len(order) // world_size)
        order = np.resize(order, per_rank * world_size)[rank::world_size]
        # negatives and histories differ per rank: derive a rank-specific stream
        local = np.random.default_rng([int(rng.integers(2**31)), rank])
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            users, pos = self.user_rows[idx], self.item_rows[idx]
            hits = None
            if shared:
                neg, hits = self._shared_negatives(local, users, n_negatives)
            else:
                neg = self.negatives.sample(local, users, n_negatives)
            hist, mask = self.histories(local, users, exclude_rows=pos)
            if self.history_dropout > 0 and mask.shape[1] > 0:
                mask &= local.random(mask.shape) >= self.history_dropout
            yield Batch(torch.from_numpy(users), torch.from_numpy(pos), torch.from_numpy(neg),
                        torch.from_numpy(hist), torch.from_numpy(mask),
                        neg_hits=None if hits is None else torch.from_numpy(hits))

    def _shared_negatives(self, rng: np.random.Generator, users: np.ndarray,
                          n: int) -> tuple[np.ndarray, np.ndarray]:
        """n distinct uniform items `[S]` for the batch, and `[B, S]` True where one is the
        row's own training item (an accidental hit: it must not be pushed away)."""
        negs = rng.choice(self.n_items, size=min(n, self.n_items), replace=False)
        negs = negs.astype(np.int64)
        hits = self.negatives.is_positive(np.repeat(users, len(negs)), np.tile(negs, len(users)))
        return negs, hits.reshape(len(users), len(negs))
