"""SERML's hierarchical review encoder: shapes, padding invariance, attention masks, learning."""

from __future__ import annotations

import torch

from models.losses import semantic_loss
from models.text_encoders import BiLSTM, HierarchicalEncoder


def _encoder(seed: int = 0) -> HierarchicalEncoder:
    torch.manual_seed(seed)
    return HierarchicalEncoder(vocab_size=20, out_dim=6, word_dim=8, hidden=5).eval()


def test_shapes_and_attention_masks() -> None:
    enc = _encoder()
    tokens = torch.tensor([[[2, 3, 4, 0], [5, 6, 0, 0], [0, 0, 0, 0]],
                           [[7, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]])  # [B=2, S=3, W=4]
    semantic, word_w, sent_w = enc.encode(tokens)
    assert semantic.shape == (2, 6) and word_w.shape == (2, 3, 4) and sent_w.shape == (2, 3)
    torch.testing.assert_close(word_w[0, 0, :3].sum(), torch.tensor(1.0))
    assert torch.all(word_w[tokens == 0] == 0)  # pads get no attention
    torch.testing.assert_close(sent_w.sum(1), torch.ones(2))
    assert sent_w[0, 2] == 0 and torch.all(sent_w[1, 1:] == 0)  # nor do empty sentences


def test_padding_does_not_change_the_vector() -> None:
    enc = _encoder()
    tight = torch.tensor([[[2, 3, 4], [5, 6, 0]]])  # [1, 2, 3]
    padded = torch.zeros(1, 5, 7, dtype=torch.long)
    padded[0, :2, :3] = tight[0]
    with torch.no_grad():
        torch.testing.assert_close(enc(tight), enc(padded))


def test_empty_review_and_batch_independence() -> None:
    enc = _encoder()
    review = torch.tensor([[[2, 3, 0], [4, 0, 0]]])
    empty = torch.zeros(1, 2, 3, dtype=torch.long)
    with torch.no_grad():
        alone = enc(review)
        both = enc(torch.cat([review, empty]))
    torch.testing.assert_close(both[:1], alone)
    assert torch.isfinite(both).all()


def test_learns_which_word_carries_the_meaning() -> None:
    """Reviews of two kinds differ in one word among noise; the regression separates them and
    the word attention finds the word."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    kind = torch.arange(64) % 2
    tokens = torch.randint(4, 20, (64, 2, 5), generator=gen)  # noise words 4..19
    tokens[torch.arange(64), 0, 2] = 2 + kind  # the planted word: 2 or 3
    targets = torch.stack([torch.ones(6), -torch.ones(6)])[kind]  # [64, 6]
    enc = HierarchicalEncoder(vocab_size=20, out_dim=6, word_dim=8, hidden=8)
    opt = torch.optim.Adam(enc.parameters(), lr=0.02)
    first = None
    for _ in range(150):
        loss = semantic_loss(enc(tokens), targets) / 64
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.05 * first
    _, word_w, _ = enc.encode(tokens)
    assert (word_w[:, 0].argmax(-1) == 2).float().mean() > 0.9


def test_bilstm_matches_a_packed_bidirectional_lstm() -> None:
    """The prefix-reversal BiLSTM is torch's packed bidirectional LSTM, with its weights."""
    torch.manual_seed(0)
    ours = BiLSTM(4, 3)
    reference = torch.nn.LSTM(4, 3, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(reference, f"{name}_l0").copy_(getattr(ours.forward_rnn, f"{name}_l0"))
            getattr(reference, f"{name}_l0_reverse").copy_(
                getattr(ours.backward_rnn, f"{name}_l0"))
    inputs = torch.randn(3, 5, 4)
    lengths = torch.tensor([5, 2, 1])
    mask = torch.arange(5)[None, :] < lengths[:, None]  # [3, 5]
    packed = torch.nn.utils.rnn.pack_padded_sequence(inputs, lengths, batch_first=True,
                                                     enforce_sorted=False)
    want, _ = torch.nn.utils.rnn.pad_packed_sequence(reference(packed)[0], batch_first=True,
                                                     total_length=5)
    with torch.no_grad():
        torch.testing.assert_close(ours(inputs, mask), want)
