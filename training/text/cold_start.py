"""Cold-start items: held out of training entirely, placed in the metric space by their text.

Stage: evaluator (issue "Semantic relations", items with no interactions). The protocol:

1. `hold_out_items` draws a fraction of the items that have text and removes them, with every
   interaction they have, *before* the split: the model never sees them, and the only thing
   that says where they belong is their text.
2. The model is trained on the warm log with `--item-text`, which learns the text -> item
   vector projection (`training/text/items.py`) and projects every text-only item, the held-out
   ones included.
3. `placement_vectors` gives the held-out items vectors three ways: the learned projection of
   their text, the vector of a random trained item (random placement) and the vector of the
   most popular trained item (popular placement, jittered so that ties break at random).
4. `cold_start_report` appends them to the item table exactly as the exporter does
   (`extend_with_text_items`) and runs the full-ranking protocol for the users who interacted
   with them, over the held-out items alone ("cold": which new item to show to whom) or over
   the whole catalogue, warm items included ("all": does a new item make it into the top K at
   all). Recall@K is the share of a user's interactions with held-out items found in the top K.
   `warm_report_with_new_items` is the other side of "all": the warm test with the new items
   in the catalogue, i.e. what a placement costs the recommendations of known items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from models.base import RelationalModel
from training.dataset import TrainDataset
from training.evaluator import EvalReport, Scorer, full_ranking
from training.interactions import DataError, Interactions, densify
from training.splits import Split, make_split
from training.text.items import TextItems, extend_with_text_items
from training.torch_scorer import ModelScorer

__all__ = ["CATALOGUES", "PLACEMENTS", "ColdStartSplit", "cold_start_report", "hold_out_items",
           "placement_vectors", "warm_report_with_new_items"]

Placement = Literal["text", "random", "popular"]
Catalogue = Literal["cold", "all"]
PLACEMENTS: tuple[Placement, ...] = ("text", "random", "popular")
CATALOGUES: tuple[Catalogue, ...] = ("cold", "all")
# Popular placement puts every new item on one point; a jitter far below the distances between
# items breaks the ties at random instead of by row order.
_TIE_JITTER = 1e-4


@dataclass(frozen=True)
class ColdStartSplit:
    """The warm split the model trains on, and the held-out items' interactions (external ids)."""

    split: Split
    cold_ids: list[str]  # held-out items, each with text and >= 1 interaction
    cold_users: np.ndarray  # [n] object str: the user of each interaction with a held-out item
    cold_items: np.ndarray  # [n] object str: its item

    def __len__(self) -> int:
        return len(self.cold_users)


def hold_out_items(inter: Interactions, text_item_ids: Sequence[str] | np.ndarray,
                   fraction: float = 0.1, split_kind: str = "per-user",
                   seed: int = 0) -> ColdStartSplit:
    """Hold `fraction` of the items of `inter` (drawn among those with text) out of training.

    The count is a fraction of *all* items, so that "10% of items" means what it says even
    when not every item has text. Interactions of held-out items whose user has nothing left
    in the warm log are dropped: such a user has no vector to rank for.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"fraction must be in (0, 1), got {fraction}")
    with_text = set(np.asarray(text_item_ids, dtype=object).astype(str).tolist())
    candidates = np.flatnonzero([i in with_text for i in inter.items.to_list()])
    n_cold = int(round(fraction * inter.n_items))
    if n_cold < 1:
        raise DataError(f"{fraction:.0%} of {inter.n_items} items is no item to hold out")
    if n_cold > len(candidates):
        raise DataError(f"cannot hold out {n_cold} items: only {len(candidates)} of "
                        f"{inter.n_items} items have text")
    rng = np.random.default_rng(seed)
    cold_rows = np.sort(rng.choice(candidates, n_cold, replace=False))
    is_cold = np.zeros(inter.n_items, bool)
    is_cold[cold_rows] = True
    on_cold = is_cold[inter.item_rows]
    warm = densify(inter.select(~on_cold))
    users = inter.users.ids[inter.user_rows[on_cold]]
    items = inter.items.ids[inter.item_rows[on_cold]]
    known = np.fromiter((warm.users.get(u) >= 0 for u in users), bool, count=len(users))
    return ColdStartSplit(make_split(warm, split_kind, seed),
                          [str(i) for i in inter.items.ids[cold_rows]], users[known],
                          items[known])


def placement_vectors(model: RelationalModel, train: Interactions, cold_ids: Sequence[str],
                      how: Placement, text_items: TextItems | None = None,
                      seed: int = 0) -> np.ndarray:
    """`[K, d]` vectors for the held-out items, in the order of `cold_ids`."""
    q = model.item_emb.weight.detach().float().cpu().numpy()  # [V, d]
    rng = np.random.default_rng(seed)
    if how == "text":
        if text_items is None:
            raise DataError("text placement needs the run's text-only items (train with "
                            "--item-text)")
        index = {item_id: i for i, item_id in enumerate(text_items.ids)}
        missing = [c for c in cold_ids if c not in index]
        if missing:
            raise DataError(f"held-out items {missing[:3]} have no projected text vector")
        return text_items.vectors[[index[c] for c in cold_ids]]
    if how == "random":
        return q[rng.integers(0, len(q), len(cold_ids))]
    if how == "popular":
        top = int(np.argmax(train.item_popularity()))
        jitter = rng.normal(0.0, _TIE_JITTER, (len(cold_ids), q.shape[1]))
        return (q[top] + jitter).astype(np.float32)
    raise DataError(f"unknown placement {how!r}; one of {', '.join(PLACEMENTS)}")


class _OnlyFrom:
    """A scorer restricted to item rows >= `first` (the appended held-out items)."""

    def __init__(self, scorer: Scorer, first: int) -> None:
        self.scorer, self.first = scorer, first

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        scores = self.scorer.score(user_rows)
        scores[:, :self.first] = -np.inf
        return scores

    def score_items(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        scores = self.scorer.score_items(user_rows, item_rows)
        scores[:, np.asarray(item_rows) < self.first] = -np.inf
        return scores


def _placed(model: RelationalModel, cold: ColdStartSplit, vectors: np.ndarray,
            test: Literal["cold", "warm"], seed: int) -> tuple[RelationalModel, Split]:
    """The model with the held-out items appended at `vectors` (as the exporter appends
    text-only items), and a split over the extended maps whose test part is the held-out
    items' interactions ("cold") or the warm test part ("warm")."""
    warm = cold.split
    placed = TextItems(list(cold.cold_ids), np.asarray(vectors, np.float32), "placement")
    bigger, train = extend_with_text_items(model, warm.train, placed)
    users, items = train.users, train.items

    def remap(part: Interactions) -> Interactions:
        return Interactions(part.user_rows, part.item_rows, part.weights, part.timestamps,
                            users, items)

    if test == "cold":
        target = Interactions(users.rows(cold.cold_users.tolist()),
                              items.rows(cold.cold_items.tolist()),
                              np.ones(len(cold), np.float32), None, users, items)
    else:
        target = remap(warm.test)
    return bigger, Split(train, remap(warm.valid), target, kind="cold-start", seed=seed)


def _scorer(model: RelationalModel, train: Interactions, seed: int) -> ModelScorer:
    cfg = model.config
    dataset = TrainDataset(train, cfg.l_max, cfg.uses_history, cfg.history_sampling,
                           cfg.history_dropout)
    return ModelScorer(model, dataset, seed=seed)


@torch.no_grad()
def cold_start_report(model: RelationalModel, cold: ColdStartSplit, vectors: np.ndarray,
                      catalogue: Catalogue = "cold", k: int = 10, seed: int = 0,
                      batch_size: int = 256) -> EvalReport:
    """Full ranking @k of the held-out items, placed at `vectors`, for the users who had them.

    The users' train and validation items are excluded as in the warm protocol; their
    histories are their warm training items, as the service would hold them.
    """
    if catalogue not in CATALOGUES:
        raise DataError(f"unknown catalogue {catalogue!r}; one of {', '.join(CATALOGUES)}")
    bigger, split = _placed(model, cold, vectors, "cold", seed)
    scorer: Scorer = _scorer(bigger, split.train, seed)
    if catalogue == "cold":
        scorer = _OnlyFrom(scorer, cold.split.train.n_items)
    return full_ranking(scorer, split, k=k, stage="test", batch_size=batch_size, progress=False)


@torch.no_grad()
def warm_report_with_new_items(model: RelationalModel, cold: ColdStartSplit,
                               vectors: np.ndarray, k: int = 10, seed: int = 0,
                               batch_size: int = 256) -> EvalReport:
    """The warm test protocol with the held-out items in the catalogue at `vectors`.

    The other side of the whole-catalogue number: a placement that pushes new items into
    everyone's top K (all of them on the most popular item, say) finds more of them, and
    crowds out the warm items users did take; this report measures the crowding.
    """
    bigger, split = _placed(model, cold, vectors, "warm", seed)
    return full_ranking(_scorer(bigger, split.train, seed), split, k=k, stage="test",
                        batch_size=batch_size, progress=False)
