"""SERML's training objective: ranking hinge + γ‖r(u, v) − s(u, v)‖² + rating supervision.

Stage: training. `build_semantic_objective(text, split, model, path)` reads the reviews
(`training/text/readers.py`), keeps those of *training* pairs (a test pair's review must not
shape the model) and returns a `SemanticObjective`: an `nn.Module` holding the model, the review
encoder and its inputs, which the `Trainer` optimises as a whole so that encoder and relations
train jointly (arXiv 2406.10246). Two encoders give s(u, v), chosen by `text.review_encoder`:

- `hierarchical` (the paper's): word and sentence BiLSTMs with attention, trained from scratch
  on the reviews' tokens (`training/text/review_tokens.py`, `models.text_encoders`);
- `pretrained`: the packaged sentence encoder's embedding of each review (`text.encoder`,
  MiniLM by default), computed once and cached on disk (`training/text/cache.py`), through a
  learned linear map to d (`models.text_encoders.ReviewProjection`). Pretrained language
  knowledge instead of a vocabulary learned from ~7k reviews, and an epoch as cheap as LRML's.

The loss is the same for both. The encoder is anchored by the paper's sentiment supervision: a
linear head on s(u, v) regresses the review's rating; without it the cheapest way to shrink
‖r − s‖² is an encoder that ignores the text and copies r (or, for the projection, shrinks to
zero). The checkpoint keeps the model alone: serving reads no review.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import RelationalModel
from models.losses import hinge_loss, semantic_loss
from models.text_encoders import HierarchicalEncoder, ReviewProjection
from training.config import ConfigError, TextConfig
from training.dataset import Batch
from training.interactions import DataError
from training.splits import Split
from training.text.cache import embed_texts
from training.text.readers import ReviewTexts, read_reviews
from training.text.review_tokens import build_vocabulary, tokenize
from training.text.sentence_encoder import SentenceEncoder, load_encoder, text_extra_available
from training.trainer import resolve_device

__all__ = ["SemanticObjective", "build_semantic_objective", "review_pairs"]

log = logging.getLogger(__name__)


class SemanticObjective(nn.Module):
    """hinge + Σ over the batch's reviewed positives of γ‖r(u, v) − s(u, v)‖² and
    λ (⟨s(u, v), w/‖w‖⟩ + b − y)², y the review's rating scaled to [−1, 1] (where it has one).

    `pair_keys` `[R]` are sorted user_row · V + item_row of the reviewed training pairs,
    `inputs` and `ratings` `[R]` (NaN: none) their reviews in the same order: what `encoder`
    reads, `[R, S, W]` token ids for `HierarchicalEncoder`, `[R, D]` sentence embeddings for
    `ReviewProjection`. The regression is computed for any γ, so that γ = 0 adds exact zeros to
    every gradient of the model and trains LRML bit for bit (the encoder still learns the
    ratings, alone).
    """

    pair_keys: Tensor  # buffers, declared for the type checker
    inputs: Tensor
    ratings: Tensor

    def __init__(self, model: RelationalModel, encoder: nn.Module, pair_keys: Tensor,
                 inputs: Tensor, ratings: Tensor, gamma: float, rating_weight: float) -> None:
        super().__init__()
        if not len(pair_keys) == len(inputs) == len(ratings) or len(pair_keys) == 0:
            raise ValueError("need one input row and rating per reviewed pair, and one pair")
        self.model = model
        self.encoder = encoder
        # The head reads s along a unit direction: with a free weight, the encoder could carry
        # the sentiment at a vanishing norm, and r would not need to move to match s.
        self.rating_direction = nn.Parameter(torch.randn(model.config.dim))
        self.rating_bias = nn.Parameter(torch.zeros(()))
        self.gamma, self.rating_weight = gamma, rating_weight
        self.register_buffer("pair_keys", pair_keys.to(torch.int64), persistent=False)
        # token ids index an embedding table (int64); sentence embeddings stay float32
        inputs = inputs.to(torch.int64) if not inputs.is_floating_point() else inputs.float()
        self.register_buffer("inputs", inputs, persistent=False)
        scaled = (ratings.float() - 3.0) / 2.0  # 1..5 stars -> [-1, 1]
        self.register_buffer("ratings", scaled, persistent=False)

    def forward(self, batch: Batch) -> Tensor:
        d_pos, d_neg = self.model.triplet_distances(
            batch.user_rows, batch.pos_rows, batch.neg_rows, batch.hist_rows, batch.hist_mask)
        loss = hinge_loss(d_pos, d_neg, self.model.config.margin)
        rows, has = self.review_rows(batch.user_rows, batch.pos_rows)
        if bool(has.any()):
            users, items = batch.user_rows[has], batch.pos_rows[has]
            relation = self.model.relation(self.model.user_vectors(users), items[:, None])
            semantic = self.semantic(rows[has])  # [b, d]
            loss = loss + self.gamma * semantic_loss(relation[:, 0], semantic)
            target = self.ratings[rows[has]]  # [b]
            rated = torch.isfinite(target)
            error = self.predict_rating(semantic) - torch.where(rated, target, 0.0)
            loss = loss + self.rating_weight * (error * error * rated).sum()
        else:  # a batch with no review: DDP still expects a gradient for every parameter
            loss = loss + 0.0 * sum(p.sum() for n, p in self.named_parameters()
                                    if not n.startswith("model."))
        return loss

    def semantic(self, rows: Tensor) -> Tensor:
        """s(u, v) `[b, d]` of the reviews at `rows` `[b]` (positions in `pair_keys`)."""
        return self.encoder(self.inputs[rows])

    def predict_rating(self, semantic: Tensor) -> Tensor:
        """The scaled rating read from s `[B, d] -> [B]`."""
        return semantic @ F.normalize(self.rating_direction, dim=0) + self.rating_bias

    def review_rows(self, user_rows: Tensor, item_rows: Tensor) -> tuple[Tensor, Tensor]:
        """Row of each pair's review `[B]` and whether it has one `[B]` bool."""
        keys = user_rows * self.model.n_items + item_rows
        rows = torch.searchsorted(self.pair_keys, keys).clamp_(max=len(self.pair_keys) - 1)
        return rows, self.pair_keys[rows] == keys


def review_pairs(reviews: ReviewTexts, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Sorted pair keys `[R]` of the reviewed *training* pairs, and the positions of their
    reviews in `reviews` `[R]`, same order."""
    train = split.train
    users = np.fromiter((train.users.get(u) for u in reviews.user_ids), np.int64,
                        count=len(reviews))
    items = np.fromiter((train.items.get(i) for i in reviews.item_ids), np.int64,
                        count=len(reviews))
    keys = users * train.n_items + items
    train_keys = np.unique(train.user_rows * train.n_items + train.item_rows)
    keep = (users >= 0) & (items >= 0) & np.isin(keys, train_keys)
    order = np.argsort(keys[keep], kind="stable")
    idx = np.flatnonzero(keep)[order]
    return keys[idx], idx


def build_semantic_objective(text: TextConfig, split: Split, model: RelationalModel,
                             reviews_path: str | None, device: str = "cpu",
                             progress: bool = False,
                             sentence_encoder: SentenceEncoder | None = None
                             ) -> SemanticObjective:
    """Read and filter the reviews at `reviews_path` (`text.reviews`, else the interaction log:
    an Amazon review file is both) and build `text.review_encoder`'s target; `text` sizes it.

    `device` is the trainer's (`auto`, `cpu`, `cuda:1`): a pretrained sentence encoder runs
    there; `sentence_encoder` replaces the one `text.encoder` names (tests pass one that
    counts its calls).
    """
    if not reviews_path:
        raise ConfigError("serml needs review text: pass --reviews PATH (Amazon review JSON)")
    if (text.review_encoder == "pretrained" and sentence_encoder is None
            and text.encoder == "minilm" and not text_extra_available()):
        raise ConfigError("text.review_encoder=pretrained embeds the reviews with MiniLM, "
                          "which needs the `text` extra: `.venv/bin/pip install -e '.[text]'`; "
                          "or use --review-encoder hierarchical")
    try:
        reviews = read_reviews(reviews_path)
    except DataError as exc:  # e.g. a CSV log given as --data, no --reviews
        raise DataError(f"serml needs review text (Amazon review JSON lines: --reviews PATH, "
                        f"default --data): {exc}") from None
    keys, idx = review_pairs(reviews, split)
    texts = [reviews.texts[i] for i in idx]
    ratings = (np.full(len(idx), np.nan, np.float32) if reviews.ratings is None
               else reviews.ratings[idx])
    n_train = len(np.unique(split.train.user_rows * split.train.n_items + split.train.item_rows))
    if len(keys) == 0:
        raise DataError(f"no review in {reviews_path} matches a training pair: the reviews must "
                        f"use the interaction log's user and item ids")
    gamma = model.config.gamma
    log.info("serml: %d of %d training pairs have a review (%.0f%%), gamma %.3g, %s encoder",
             len(keys), n_train, 100 * len(keys) / max(n_train, 1), gamma, text.review_encoder)
    dim = model.config.dim
    if text.review_encoder == "pretrained":
        encoder = sentence_encoder or load_encoder(text.encoder, resolve_device(device).type)
        vecs = embed_texts(texts, encoder, text.cache_dir, progress=progress)  # [R, D]
        projection = ReviewProjection(vecs.shape[1], dim)
        return SemanticObjective(model, projection, torch.from_numpy(keys),
                                 torch.from_numpy(vecs), torch.from_numpy(ratings), gamma,
                                 text.rating_weight)
    vocab = build_vocabulary(texts, text.vocab_size)
    tokens = tokenize(texts, vocab, text.max_sentences, text.max_words)
    hierarchical = HierarchicalEncoder(len(vocab) + 2, dim, text.word_dim, text.hidden)
    return SemanticObjective(model, hierarchical, torch.from_numpy(keys),
                             torch.from_numpy(tokens), torch.from_numpy(ratings), gamma,
                             text.rating_weight)
