"""Review tokens: review texts -> `[R, S, W]` word ids for SERML's hierarchical encoder.

Stage: text features, before training. Sentences are split at . ! ? (Amazon reviews often omit
the space after a full stop, "affordable.I did"), words are lower-cased alphanumeric runs. The
vocabulary is built from the training pairs' reviews only (so nothing of the test reviews leaks
into the model), most frequent first; id 0 pads, id 1 is every word outside the vocabulary.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

__all__ = ["PAD", "UNKNOWN", "build_vocabulary", "tokenize"]

PAD, UNKNOWN = 0, 1
_SENTENCE_END = re.compile(r"[.!?]+")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _sentences(text: str) -> list[list[str]]:
    parts = (_WORD.findall(s) for s in _SENTENCE_END.split(text.lower()))
    return [words for words in parts if words]


def build_vocabulary(texts: Sequence[str], max_size: int = 20_000,
                     min_count: int = 2) -> dict[str, int]:
    """word -> id (2, 3, … by frequency, ties alphabetical); words seen < min_count are dropped,
    since a word met once gives its embedding one gradient step and no meaning."""
    counts = Counter(w for text in texts for sentence in _sentences(text) for w in sentence)
    ranked = sorted((w for w, n in counts.items() if n >= min_count),
                    key=lambda w: (-counts[w], w))
    return {w: i + 2 for i, w in enumerate(ranked[: max(0, max_size - 2)])}


def tokenize(texts: Sequence[str], vocab: dict[str, int], max_sentences: int = 10,
             max_words: int = 30) -> np.ndarray:
    """`[R, max_sentences, max_words]` int32 word ids; longer reviews keep their first
    sentences and each sentence its first words (SERML truncates the same way)."""
    out = np.zeros((len(texts), max_sentences, max_words), np.int32)
    for row, text in enumerate(texts):
        for s, words in enumerate(_sentences(text)[:max_sentences]):
            ids = [vocab.get(w, UNKNOWN) for w in words[:max_words]]
            out[row, s, : len(ids)] = ids
    return out
