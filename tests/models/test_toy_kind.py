"""A new model kind is one file plus one registry line (issue 17, step 1).

The toy kind below (a CML with one learned global translation t: d(u, v) = ‖p_u + t − q_v‖²)
lives only in this test: its model, its scoring graph and a `registry.register` call. With
nothing else changed in the package it validates as a `ModelConfig`, exports (ONNX parity
included) from a tiny synthetic log, loads in the service's loader and is served by the
service's retriever and ranker with the model's own distances.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import Tensor, nn

from models import registry
from models.base import RelationalModel
from models.config import ModelConfig
from models.graphs import ScorerGraph
from models.registry import ModelSpec
from service.loader import load_artifact
from service.ranker import Ranker
from service.retriever import Retriever
from training.config import TrainConfig
from training.exporter import export
from training.synthetic import planted_interactions

KIND = "toy-translation"


class ToyTranslation(RelationalModel):
    """r(u, v) = t, one translation shared by every pair."""

    def __init__(self, config: ModelConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.translation = nn.Parameter(torch.randn(config.dim) * config.dim**-0.5)  # [d]

    def _relation(self, user_vecs: Tensor, item_vecs: Tensor, hist_vecs: Tensor,
                  hist_mask: Tensor) -> tuple[Tensor, Tensor | None]:
        batch, n_cand = user_vecs.shape[0], item_vecs.shape[-2]
        return self.translation.expand(batch, n_cand, -1), None  # [B, C, d]


class ToyTranslationGraph(ScorerGraph):
    """‖p_u + t − q_v‖² for ONNX."""

    def __init__(self, items: Tensor, translation: Tensor, l_max: int) -> None:
        super().__init__(items, l_max)
        self.register_buffer("translation", translation.clone())  # [d]

    def score(self, user_vecs: Tensor, hist_rows: Tensor, hist_mask: Tensor,
              cand: Tensor) -> tuple[Tensor, Tensor | None]:
        diff = (user_vecs + self.translation)[:, None, :] - cand  # [B, C, d]
        return (diff * diff).sum(-1), None


def toy_graph(model: RelationalModel, shift: str = "auto") -> ScorerGraph:
    items = model.item_emb.weight.detach().float().cpu()
    return ToyTranslationGraph(items, model.translation.detach().float().cpu(),
                               model.config.l_max)


@pytest.fixture
def toy_kind() -> Iterator[str]:
    registry.register(KIND, ModelSpec(ToyTranslation, toy_graph))
    try:
        yield KIND
    finally:
        registry.unregister(KIND)


def test_unregistered_kind_is_rejected() -> None:
    with pytest.raises(ValidationError, match="unknown model kind"):
        ModelConfig(kind=KIND)


def test_registered_kind_is_a_relational_algorithm(toy_kind: str) -> None:
    cfg = TrainConfig(algorithm=toy_kind, model=ModelConfig(kind=toy_kind))
    assert cfg.is_relational
    assert not cfg.model.uses_history
    assert toy_kind not in registry.memory_kinds() and toy_kind not in registry.history_kinds()


def test_toy_kind_exports_and_serves(toy_kind: str, tmp_path: Path) -> None:
    train = planted_interactions(n_users=40, n_items=30, items_per_user=6, seed=0)
    torch.manual_seed(0)
    model = registry.build_model(ModelConfig(kind=toy_kind, dim=8, l_max=4),
                                 train.n_users, train.n_items)
    assert isinstance(model, ToyTranslation)
    vdir = export(model, train, tmp_path / "artifacts", index="flat")  # parity-checked

    loaded = load_artifact(vdir)
    assert loaded.manifest.kind == toy_kind and not loaded.has_attention
    arrays = loaded.arrays
    retriever = Retriever(loaded.index, arrays.items, arrays.keys, arrays.memories,
                          n_candidates=10)
    user_vecs = np.asarray(arrays.users[:3], np.float32)  # [B, d]
    cands = retriever.candidates(user_vecs, [np.zeros(0, np.int64)] * 3,
                                 [np.zeros(0, np.int64)] * 3)
    assert all(len(c) == 10 for c in cands)
    hist_rows = np.zeros((3, loaded.l_max), np.int64)
    hist_mask = np.zeros((3, loaded.l_max), np.float32)
    ranked = Ranker(loaded.session, loaded.l_max, loaded.has_attention).rank(
        user_vecs, hist_rows, hist_mask, cands, ks=[5, 5, 5])
    with torch.no_grad():
        for b, result in enumerate(ranked):
            want = model.distance(torch.from_numpy(user_vecs[b:b + 1]),
                                  torch.from_numpy(cands[b][None])).numpy()[0]  # [C]
            order = np.argsort(want, kind="stable")[:5]
            np.testing.assert_allclose(result.distances, want[order], rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(np.sort(result.rows), np.sort(cands[b][order]))
