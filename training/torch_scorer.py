"""ModelScorer: adapts a trained RelationalModel to the evaluator's Scorer protocol.

Reads the model and a CSR of each user's known items, writes numpy score matrices (higher is
better = negative distance). Histories for evaluation are those items capped at L_max with a
fixed seed, so two evaluations of one model give the same numbers. At validation the known
items are the train items (the `TrainDataset`); at test time they are train + validation
(:func:`train_valid_histories`), as the HLR reference code feeds its history models: the
validation items are excluded from the ranking as known, so they also belong in the history.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from training.dataset import TrainDataset
from training.interactions import Interactions
from training.sampler import sample_history


class HistorySource(Protocol):
    """What the scorer needs of `TrainDataset`: capped histories of given users."""

    def histories(self, rng: np.random.Generator,
                  user_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class KnownHistories:
    """Capped histories drawn from every item of several logs (train + validation at test).

    Sampling as `TrainDataset.histories` (same L_max, same popularity weights, so only the item
    pool differs); models without history get zero-width histories as there.
    """

    def __init__(self, dataset: TrainDataset, logs: list[Interactions]) -> None:
        csr = logs[0].to_csr()
        for extra in logs[1:]:
            csr = csr + extra.to_csr()
        csr = csr.tocsr()
        csr.sum_duplicates()
        csr.sort_indices()
        self.indptr = csr.indptr.astype(np.int64)
        self.indices = csr.indices.astype(np.int64)
        self.dataset = dataset

    def histories(self, rng: np.random.Generator,
                  user_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ds = self.dataset
        if not ds.uses_history:
            return ds.histories(rng, user_rows)
        return sample_history(rng, user_rows, self.indptr, self.indices, ds.l_max,
                              item_weights=ds.item_weights)


def train_valid_histories(dataset: TrainDataset, train: Interactions,
                   valid: Interactions) -> KnownHistories:
    """The test-stage history pool: each user's train + validation items."""
    return KnownHistories(dataset, [train, valid])


class ModelScorer:
    """Scores users against items with a model's exact distance, in eval mode, no grad."""

    def __init__(self, model: torch.nn.Module, dataset: HistorySource, seed: int = 0,
                 chunk: int = 1024) -> None:
        """`dataset` supplies the histories: the `TrainDataset` (train items, validation) or
        :func:`train_valid_histories` (train + validation items, the test stage)."""
        self.model = model
        self.dataset = dataset
        self.seed = seed
        self.chunk = chunk

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _histories(self, user_rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(user_rows[0]) if len(user_rows) else 0])
        hist, mask = self.dataset.histories(rng, user_rows)
        return torch.from_numpy(hist).to(self.device), torch.from_numpy(mask).to(self.device)

    @torch.no_grad()
    def score(self, user_rows: np.ndarray) -> np.ndarray:
        """[B, n_items] negative distances to every item."""
        was_training = self.model.training
        self.model.eval()
        hist, mask = self._histories(user_rows)
        users = torch.from_numpy(np.asarray(user_rows, np.int64)).to(self.device)
        scores = self.model.score_all(users, hist, mask, chunk=self.chunk)
        self.model.train(was_training)
        return scores.float().cpu().numpy()

    @torch.no_grad()
    def score_items(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        """[B, C] negative distances to the given candidate items."""
        was_training = self.model.training
        self.model.eval()
        hist, mask = self._histories(user_rows)
        users = torch.from_numpy(np.asarray(user_rows, np.int64)).to(self.device)
        items = torch.from_numpy(np.asarray(item_rows, np.int64)).to(self.device)
        dist = self.model.distance(self.model.user_vectors(users), items, hist, mask)
        self.model.train(was_training)
        return (-dist).float().cpu().numpy()
