"""The relational model interface: every model scores (user, item) by a squared distance.

Each model translates the user vector by a relation r and scores ‖p_u + r − q_v‖², smaller is
better (DESIGN §1; CML has r = 0; AdaCML's p̃_u − p_u plays the role of r). Subclasses only
implement `_relation`; this base class turns it into batched distances, triplet distances for
the trainer, chunked full-ranking scores for the evaluator, and the unit-ball projection.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from models.config import ModelConfig
from models.lram import LRAM, PAD_LOGIT

# Floats (float32) that `score_all` may hold in intermediates per item chunk: 256 MB. Larger
# chunks keep the pair matmuls efficient (a 52-row chunk runs at 2/3 the speed of 256 rows).
SCORE_BUDGET = 1 << 26


def masked_softmax(logits: Tensor, mask: Tensor, dim: int = -1, never_empty: bool = False
                   ) -> Tensor:
    """Softmax of `logits` over the positions where `mask` is True; 0 elsewhere.

    A row with no True position gives all zeros instead of NaN, which is how an empty history
    contributes nothing (DESIGN §1: "masked by length"). `mask` broadcasts against `logits`.
    Pads get the finite PAD_LOGIT rather than -inf, so `torch.softmax` (one fused pass, and one
    in backward) gives them exactly 0 and an all-pad row a finite uniform row, which the final
    multiply by "row has a real slot" zeroes — with a zero gradient. `never_empty` (HLR: the
    user slot is always there) skips that multiply.
    """
    if logits.shape[dim] == 0:
        return logits
    weights = torch.softmax(logits.masked_fill(~mask, PAD_LOGIT), dim=dim)
    if never_empty:
        return weights
    return weights * mask.any(dim=dim, keepdim=True)


class RelationalModel(nn.Module, ABC):
    """User and item tables (N(0, 1/√d), as the HLR reference) plus a model-specific relation.

    Shapes: B batch, C candidates, L history, N memory slots, d dim. History rows under
    `hist_mask == False` may hold any valid row id; their vectors are replaced by the constant
    zero vector (as the reference's padding row) in effect: they get no attention weight.
    """

    def __init__(self, config: ModelConfig, n_users: int, n_items: int) -> None:
        super().__init__()
        if n_users <= 0 or n_items <= 0:
            raise ValueError(f"need at least one user and one item, got {n_users=}, {n_items=}")
        self.config = config
        self.lram: LRAM | None = None  # set by the models that read a memory
        self.user_emb = nn.Embedding(n_users, config.dim)
        self.item_emb = nn.Embedding(n_items, config.dim)
        for table in (self.user_emb, self.item_emb):
            nn.init.normal_(table.weight, mean=0.0, std=config.dim**-0.5)

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def n_users(self) -> int:
        return self.user_emb.num_embeddings

    @property
    def n_items(self) -> int:
        return self.item_emb.num_embeddings

    # -- model-specific part -------------------------------------------------------------------

    @abstractmethod
    def _relation(
        self, user_vecs: Tensor, item_vecs: Tensor, hist_vecs: Tensor, hist_mask: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """The translation r(u, v) `[B, C, d]` and the history attention `[B, C, L]` or None.

        user_vecs `[B, d]`; item_vecs `[C, d]` (candidates shared by all rows, `score_all`) or
        `[B, C, d]`; hist_vecs `[B, L, d]` (pads hold any row; mask them); hist_mask `[B, L]` bool.
        """

    def _pair_cost(self, n_hist: int) -> int:
        """Floats per (user, candidate) pair in the largest `_relation` intermediate."""
        return self.config.dim

    # -- public interface ----------------------------------------------------------------------

    def user_vectors(self, user_rows: Tensor) -> Tensor:
        """p_u for dense user rows `[B] -> [B, d]`."""
        return self.user_emb(user_rows)

    def distance(
        self,
        user_vecs: Tensor,
        item_rows: Tensor,
        hist_rows: Tensor | None = None,
        hist_mask: Tensor | None = None,
    ) -> Tensor:
        """Squared distances ‖p_u + r(u, v) − q_v‖² `[B, C]` of candidates `item_rows [B, C]`.

        Takes user vectors, not rows, so that users unknown to training can be scored. A None
        history is an empty one.
        """
        item_vecs = self.item_emb(item_rows)  # [B, C, d]
        hist_vecs, mask = self._history(user_vecs, hist_rows, hist_mask)
        relation, _ = self._relation(user_vecs, item_vecs, hist_vecs, mask)
        return _translated_distance(user_vecs, relation, item_vecs)

    def relation(
        self,
        user_vecs: Tensor,
        item_rows: Tensor,
        hist_rows: Tensor | None = None,
        hist_mask: Tensor | None = None,
    ) -> Tensor:
        """The induced relation r(u, v) `[B, C, d]` (for analysis and relation supervision)."""
        hist_vecs, mask = self._history(user_vecs, hist_rows, hist_mask)
        return self._relation(user_vecs, self.item_emb(item_rows), hist_vecs, mask)[0]

    def attention(
        self,
        user_vecs: Tensor,
        item_rows: Tensor,
        hist_rows: Tensor | None = None,
        hist_mask: Tensor | None = None,
    ) -> Tensor | None:
        """The weight of each history item in r(u, v) `[B, C, L]` (HLR, HLR++), else None.

        HLR: β over the history slots (the user slot holds the rest of the mass, so a row
        sums to 1 − β_user); HLR++: the item-item branch's β, which sums to 1 over the real
        history. Used to explain a recommendation by the history items that weighed most;
        pads, and every slot of an empty history, get 0.
        """
        hist_vecs, mask = self._history(user_vecs, hist_rows, hist_mask)
        return self._relation(user_vecs, self.item_emb(item_rows), hist_vecs, mask)[1]

    def triplet_distances(
        self,
        user_rows: Tensor,
        pos_rows: Tensor,
        neg_rows: Tensor,
        hist_rows: Tensor | None = None,
        hist_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(d(u, v) `[B]`, d(u, v⁻) shaped like `neg_rows`: `[B]` or `[B, n]`), for the loss.

        The positive and every negative are the candidates of one `_relation` call. With
        `config.copy` the negatives are scored with the positive's relation, as the original
        LRML does; otherwise each negative gets its own relation (HLR reference default).
        """
        user_vecs = self.user_vectors(user_rows)  # [B, d]
        hist_vecs, mask = self._history(user_vecs, hist_rows, hist_mask)
        negs = neg_rows[:, None] if neg_rows.dim() == 1 else neg_rows  # [B, n]
        if self.config.copy:
            pos_vecs = self.item_emb(pos_rows)[:, None, :]  # [B, 1, d]
            neg_vecs = self.item_emb(negs)  # [B, n, d]
            relation, _ = self._relation(user_vecs, pos_vecs, hist_vecs, mask)  # [B, 1, d]
            d_pos = _translated_distance(user_vecs, relation, pos_vecs)[:, 0]
            d_neg = _translated_distance(user_vecs, relation.expand_as(neg_vecs), neg_vecs)
        else:
            item_vecs = self.item_emb(torch.cat([pos_rows[:, None], negs], dim=1))  # [B, 1+n, d]
            relation, _ = self._relation(user_vecs, item_vecs, hist_vecs, mask)  # [B, 1+n, d]
            dists = _translated_distance(user_vecs, relation, item_vecs)  # [B, 1+n]
            d_pos, d_neg = dists[:, 0], dists[:, 1:]
        return d_pos, d_neg.reshape(neg_rows.shape)

    def shared_distances(
        self,
        user_rows: Tensor,
        pos_rows: Tensor,
        cand_rows: Tensor,
        hist_rows: Tensor | None = None,
        hist_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(d(u, v) `[B]`, d(u, c) `[B, S]`) for candidates `cand_rows [S]` shared by the batch.

        The sampled softmax draws one set of negatives for the whole batch, as two-tower
        retrieval models do: the S candidates are scored by `_shared_distance`, which a model
        can write as matmuls (CML: one GEMM) instead of gathering a `[B, S, d]` copy of them.
        """
        user_vecs = self.user_vectors(user_rows)  # [B, d]
        hist_vecs, mask = self._history(user_vecs, hist_rows, hist_mask)
        pos_vecs = self.item_emb(pos_rows)[:, None, :]  # [B, 1, d]
        relation, _ = self._relation(user_vecs, pos_vecs, hist_vecs, mask)  # [B, 1, d]
        d_pos = _translated_distance(user_vecs, relation, pos_vecs)[:, 0]
        cand_vecs = self.item_emb(cand_rows)  # [S, d]
        return d_pos, self._shared_distance(user_vecs, cand_vecs, hist_vecs, mask, hist_rows)

    def _shared_distance(self, user_vecs: Tensor, cand_vecs: Tensor, hist_vecs: Tensor,
                         hist_mask: Tensor, hist_rows: Tensor | None) -> Tensor:
        """Differentiable distances `[B, S]` of shared candidates `cand_vecs [S, d]`; a model
        whose relation reads item pairs may use `hist_rows` to work per distinct item."""
        relation, _ = self._relation(user_vecs, cand_vecs, hist_vecs, hist_mask)  # [B, S, d]
        return _translated_distance(user_vecs, relation, cand_vecs)

    @torch.no_grad()
    def negative_hardness(
        self,
        user_rows: Tensor,
        neg_rows: Tensor,
        hist_rows: Tensor | None = None,
        hist_mask: Tensor | None = None,
    ) -> Tensor:
        """Distances `[B, n]` by which the hardest of n sampled negatives is chosen (no grad).

        Exact for the models whose relation does not read a history (CML, LRML: n more
        candidates are cheap). A history model would pay n times its relation for that, so it
        ranks by the ‖p − q‖² proxy instead (DESIGN §1) and a step costs about the same as with
        one negative.
        """
        user_vecs = self.user_vectors(user_rows)  # [B, d]
        if self.config.uses_history:
            diff = user_vecs[:, None, :] - self.item_emb(neg_rows)  # [B, n, d]
            return (diff * diff).sum(-1)
        return self.distance(user_vecs, neg_rows)

    @torch.no_grad()
    def score_all(
        self,
        user_rows: Tensor,
        hist_rows: Tensor | None = None,
        hist_mask: Tensor | None = None,
        chunk: int = 512,
    ) -> Tensor:
        """−distance of every item for each user `[B, V]` (higher is better), for full ranking.

        Items are scored `chunk` at a time (fewer when the model's intermediates would pass
        SCORE_BUDGET floats), each chunk shared by the whole batch so that models can fold it
        into matmuls. History columns that are padding in every row are dropped first.
        """
        user_vecs = self.user_vectors(user_rows)  # [B, d]
        if hist_rows is not None and hist_mask is not None:
            keep = hist_mask.to(torch.bool).any(dim=0)  # [L]
            hist_rows, hist_mask = hist_rows[:, keep], hist_mask[:, keep]
        state, per_item = self._prepare_scoring(user_vecs, hist_rows, hist_mask)
        step = max(1, min(chunk, SCORE_BUDGET // max(1, per_item)))
        scores = user_vecs.new_empty(user_vecs.shape[0], self.n_items)  # [B, V]
        for start in range(0, self.n_items, step):
            item_vecs = self.item_emb.weight[start : start + step]  # [C, d]
            scores[:, start : start + step] = -self._score_chunk(state, item_vecs)
        return scores

    def _prepare_scoring(
        self, user_vecs: Tensor, hist_rows: Tensor | None, hist_mask: Tensor | None
    ) -> tuple[Any, int]:
        """Per-batch work of `score_all`, and the floats one candidate costs per chunk."""
        hist_vecs, mask = self._history(user_vecs, hist_rows, hist_mask)
        per_item = user_vecs.shape[0] * self._pair_cost(mask.shape[1])
        return (user_vecs, hist_vecs, mask), per_item

    def _score_chunk(self, state: Any, item_vecs: Tensor) -> Tensor:
        """Distances `[B, C]` of candidates `item_vecs [C, d]` shared by the batch."""
        user_vecs, hist_vecs, mask = state
        relation, _ = self._relation(user_vecs, item_vecs, hist_vecs, mask)  # [B, C, d]
        return _translated_distance(user_vecs, relation, item_vecs)

    @torch.no_grad()
    def project_(self) -> None:
        """Project every user and item row into the unit ball ‖·‖ ≤ 1, in place.

        The CML constraint, applied after every optimiser step as the reference's
        `clip_by_norm(…, 1, axes=[1])`; with `clip_memory`, K's rows `[N]` and M's rows `[d]`
        too (reference `clip_ram`).
        """
        tables = [self.user_emb.weight, self.item_emb.weight]
        if self.config.clip_memory and self.lram is not None:
            tables += [self.lram.keys, self.lram.memories]
        for table in tables:
            table.renorm_(p=2, dim=0, maxnorm=1.0)

    # -- helpers -------------------------------------------------------------------------------

    def _history(
        self, user_vecs: Tensor, hist_rows: Tensor | None, hist_mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """History vectors `[B, L, d]` and the bool mask `[B, L]`.

        Pad slots keep whatever row they name: every model masks them out of its attention
        (a weight of exactly 0, and so a zero gradient), which is the reference's zero padding
        row without a `[B, L, d]` pass to write zeros.
        """
        if hist_rows is None or not self.config.uses_history:  # CML, LRML read no history
            batch = user_vecs.shape[0]
            empty = user_vecs.new_zeros(batch, 0, self.config.dim)  # [B, 0, d]
            return empty, torch.zeros(batch, 0, dtype=torch.bool, device=user_vecs.device)
        mask = (
            torch.ones_like(hist_rows, dtype=torch.bool)
            if hist_mask is None
            else hist_mask.to(torch.bool)
        )  # [B, L]
        return self.item_emb(hist_rows), mask


def _translated_distance(user_vecs: Tensor, relation: Tensor, item_vecs: Tensor) -> Tensor:
    """‖p_u + r − q_v‖² `[B, C]`; item_vecs `[C, d]` or `[B, C, d]`, relation `[B, C, d]`."""
    diff = user_vecs[:, None, :] + relation - item_vecs  # [B, C, d]
    return (diff * diff).sum(dim=-1)
