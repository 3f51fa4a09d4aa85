"""The weight-free hashing sentence encoder, in numpy: shared by training and the service.

Signed feature hashing of lower-cased words and word bigrams into `dim` buckets, L2-normalised.
It has no weights, so an artifact needs only its width to reproduce it: training
(`training/text/sentence_encoder.py`) embeds item text with it, and the service
(`service/text_placer.py`) embeds the text of an item PUT at run time with the very same code,
so that both sides agree bit for bit without an ONNX graph.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

__all__ = ["HASHING_PREFIX", "HashingEncoder", "normalised"]

HASHING_PREFIX = "hashing-"  # encoder names are "hashing-{dim}"
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


class HashingEncoder:
    """Signed feature hashing of lower-cased words and word bigrams into `dim` buckets.

    blake2b, not Python's `hash`, so that vectors are the same in every process (the cache,
    the artifact and the service depend on it).
    """

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.name = f"{HASHING_PREFIX}{dim}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[T, dim] float32, rows L2-normalised (a text without words gives the zero row)."""
        out = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            words = _TOKEN.findall(text.lower())
            bigrams = (f"{a} {b}" for a, b in zip(words[:-1], words[1:], strict=True))
            for feature in [*words, *bigrams]:
                code = int.from_bytes(
                    hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
                out[row, code % self.dim] += 1.0 if (code >> 63) else -1.0
        return normalised(out)


def normalised(vecs: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm; zero rows stay zero."""
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return np.where(norms > 0, vecs / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
