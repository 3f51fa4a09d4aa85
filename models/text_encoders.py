"""Text encoders trained inside relrec: SERML's hierarchical LSTM over review tokens, and the
linear maps that bring a pretrained sentence embedding into the model's space.

A review is `[S, W]` word ids (sentences x words, 0 = pad). Words pass a bidirectional LSTM and
an additive attention that pools each sentence; sentences pass a second BiLSTM and attention
that pools the review; a linear map brings the review vector to the relation space `[d]`
(hierarchical attention network, Yang et al. NAACL 2016, as used by SERML, arXiv 2406.10246).
SERML's other target (`text.review_encoder = "pretrained"`) is `ReviewProjection` of the
review's frozen sentence embedding (MiniLM, `training/text/sentence_encoder.py`).
Reading tokens is `training/text/review_tokens.py`'s job; this module is arithmetic only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.base import masked_softmax


class AdditiveAttention(nn.Module):
    """a_t = softmax_t(c · tanh(W h_t + b)) over the unmasked steps; returns Σ a_t h_t and a."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.context = nn.Parameter(torch.randn(dim) * dim**-0.5)

    def forward(self, states: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        logits = torch.tanh(self.proj(states)) @ self.context  # [B, T]
        weights = masked_softmax(logits, mask)  # [B, T]; an all-pad row gives zeros
        return (weights[..., None] * states).sum(dim=1), weights  # [B, H], [B, T]


class BiLSTM(nn.Module):
    """A bidirectional LSTM over the real prefix of each row: `[B, T, E] -> [B, T, 2h]`.

    Run over the padding first, the backward direction would start a review's last word from
    a state that depends on how much padding follows. Each row's real prefix is reversed in
    place (pads stay at the end, where a forward pass never looks back at them) and read by a
    second forward LSTM: exact like `pack_padded_sequence`, and 2x faster on a CPU.
    """

    def __init__(self, input_dim: int, hidden: int) -> None:
        super().__init__()
        self.forward_rnn = nn.LSTM(input_dim, hidden, batch_first=True)
        self.backward_rnn = nn.LSTM(input_dim, hidden, batch_first=True)

    def forward(self, inputs: Tensor, mask: Tensor) -> Tensor:
        """inputs `[B, T, E]`, mask `[B, T]` (True on a prefix of each row) -> `[B, T, 2h]`,
        zeros at pads."""
        steps = torch.arange(inputs.shape[1], device=inputs.device)[None, :]  # [1, T]
        lengths = mask.sum(dim=1, keepdim=True)  # [B, 1]
        flip = torch.where(steps < lengths, lengths - 1 - steps, steps)  # [B, T], an involution
        ahead, _ = self.forward_rnn(inputs)  # [B, T, h]
        reversed_in = inputs.gather(1, flip[..., None].expand_as(inputs))
        behind, _ = self.backward_rnn(reversed_in)  # [B, T, h], in reversed order
        behind = behind.gather(1, flip[..., None].expand_as(behind))
        return torch.cat([ahead, behind], dim=-1) * mask[..., None]


class HierarchicalEncoder(nn.Module):
    """Word BiLSTM + attention -> sentence vectors; sentence BiLSTM + attention -> s `[B, d]`."""

    def __init__(self, vocab_size: int, out_dim: int, word_dim: int = 64,
                 hidden: int = 50) -> None:
        super().__init__()
        self.words = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        self.word_rnn = BiLSTM(word_dim, hidden)
        self.word_attention = AdditiveAttention(2 * hidden)
        self.sentence_rnn = BiLSTM(2 * hidden, hidden)
        self.sentence_attention = AdditiveAttention(2 * hidden)
        self.out = nn.Linear(2 * hidden, out_dim)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens `[B, S, W]` int (0 = pad) -> semantic vectors `[B, d]`."""
        return self.encode(tokens)[0]

    def encode(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """s `[B, d]`, word attention `[B, S, W]` and sentence attention `[B, S]` (for analysis)."""
        batch, n_sent, n_words = tokens.shape
        word_mask = tokens > 0  # [B, S, W]
        sent_mask = word_mask.any(dim=-1)  # [B, S]
        flat_tokens = tokens.reshape(batch * n_sent, n_words)
        # Only real sentences pass the word LSTM: reviews are short, most of [S] is padding.
        real = sent_mask.reshape(-1).nonzero(as_tuple=True)[0]  # [R]
        real_mask = word_mask.reshape(-1, n_words)[real]  # [R, W]
        states = self.word_rnn(self.words(flat_tokens[real]), real_mask)  # [R, W, 2h]
        pooled, word_w = self.word_attention(states, real_mask)  # [R, 2h], [R, W]
        sentences = pooled.new_zeros(batch * n_sent, pooled.shape[-1])  # [B·S, 2h]
        sentences = sentences.index_copy(0, real, pooled).view(batch, n_sent, -1)
        word_attention = word_w.new_zeros(batch * n_sent, n_words).index_copy(0, real, word_w)
        states = self.sentence_rnn(sentences, sent_mask)  # [B, S, 2h]
        review, sent_w = self.sentence_attention(states, sent_mask)  # [B, 2h], [B, S]
        return self.out(review), word_attention.view(batch, n_sent, n_words), sent_w


class ItemTextProjection(nn.Module):
    """Text embedding t_v `[T, D]` -> an item vector `[T, d]` in the model's space.

    Learned during training by regression onto the trained item vectors q_v, so that an item
    with text and no interaction gets a vector (cold start). Linear: with a few thousand items
    and D = 384, anything deeper fits the warm items and generalises worse to new ones.
    """

    def __init__(self, text_dim: int, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(text_dim, dim)

    def forward(self, text_vecs: Tensor) -> Tensor:
        return self.linear(text_vecs)


class ReviewProjection(nn.Module):
    """A review's frozen sentence embedding e `[B, D]` -> SERML's semantic target s `[B, d]`.

    The pretrained alternative to `HierarchicalEncoder`: the sentence encoder already read the
    words (once, before training, cached), so what is learned is only where its space sits in
    the relation space. Linear, like `ItemTextProjection`: a few thousand reviews train it, and
    the rating supervision reads s along one direction, which a linear map keeps meaningful.
    """

    def __init__(self, text_dim: int, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(text_dim, dim)

    def forward(self, embeddings: Tensor) -> Tensor:
        """embeddings `[B, D]` float -> semantic vectors `[B, d]`."""
        return self.linear(embeddings)
