"""ModelScorer: adapts a trained RelationalModel to the evaluator's Scorer protocol.

Reads the model and the training CSR (through `TrainDataset`), writes numpy score matrices
(higher is better = negative distance). Histories for evaluation are the user's training items
capped at L_max with a fixed seed, so two evaluations of one model give the same numbers.
"""

from __future__ import annotations

import numpy as np
import torch

from training.dataset import TrainDataset


class ModelScorer:
    """Scores users against items with a model's exact distance, in eval mode, no grad."""

    def __init__(self, model: torch.nn.Module, dataset: TrainDataset, seed: int = 0,
                 chunk: int = 1024) -> None:
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
