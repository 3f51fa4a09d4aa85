"""Text embedding cache: encode each distinct text once per encoder, keep the vectors on disk.

Stage: text features, between the text readers and training. `embed_texts(texts, encoder,
cache_dir)` returns `[T, D]` float32 in the order of `texts`, encoding only the texts whose
sha256 is not yet in `cache_dir/<encoder name>.npz`, in batches under a tqdm bar (a pretrained
encoder takes minutes for ten thousand items on two cores, and a rerun should take none). The
file is replaced atomically, so an interrupted run loses only its own new vectors.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from models.durable import atomic_path
from training.text.sentence_encoder import SentenceEncoder

__all__ = ["cache_path", "embed_texts", "text_keys"]

log = logging.getLogger(__name__)

KEY_BYTES = 16  # of sha256: 128 bits, no collision among any realistic set of texts


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """[T] fixed-width byte keys, the cache's index."""
    return np.array([hashlib.sha256(t.encode("utf-8")).digest()[:KEY_BYTES] for t in texts],
                    dtype=f"S{KEY_BYTES}")


def cache_path(cache_dir: str | Path, encoder_name: str) -> Path:
    """One file per encoder: vectors of different encoders never mix."""
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", encoder_name)
    return Path(cache_dir) / f"{safe}.npz"


def embed_texts(texts: Sequence[str], encoder: SentenceEncoder, cache_dir: str | Path | None,
                batch_size: int = 256, progress: bool = True) -> np.ndarray:
    """Vectors of `texts` `[T, D]` (float32), from the cache where present, else encoded.

    `cache_dir=None` encodes everything and writes nothing.
    """
    keys = text_keys(texts)
    known_keys, known_vecs = _load(cache_dir, encoder)
    lookup = {k: i for i, k in enumerate(known_keys.tolist())}
    unique_missing = list(dict.fromkeys(k for k in keys.tolist() if k not in lookup))
    first_text = {}
    for key, text in zip(keys.tolist(), texts, strict=True):
        first_text.setdefault(key, text)
    new_vecs = _encode(encoder, [first_text[k] for k in unique_missing], batch_size, progress)
    if unique_missing:
        known_keys = np.concatenate([known_keys, np.array(unique_missing, dtype=keys.dtype)])
        known_vecs = np.concatenate([known_vecs, new_vecs])
        lookup.update({k: len(lookup) + i for i, k in enumerate(unique_missing)})
        if cache_dir is not None:
            _save(cache_path(cache_dir, encoder.name), known_keys, known_vecs)
    log.info("text embeddings (%s): %d texts, %d encoded, %d from cache", encoder.name,
             len(texts), len(unique_missing), len(texts) - len(unique_missing))
    rows = np.fromiter((lookup[k] for k in keys.tolist()), np.int64, count=len(keys))
    return known_vecs[rows] if len(rows) else np.zeros((0, encoder.dim), np.float32)


def _encode(encoder: SentenceEncoder, texts: list[str], batch_size: int,
            progress: bool) -> np.ndarray:
    parts = []
    with tqdm(total=len(texts), desc=f"encoding text ({encoder.name})", unit="text",
              disable=not progress or not texts, leave=False) as bar:
        for start in range(0, len(texts), batch_size):
            batch = texts[start:start + batch_size]
            parts.append(np.asarray(encoder.encode(batch), np.float32))
            bar.update(len(batch))
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim), np.float32)


def _load(cache_dir: str | Path | None, encoder: SentenceEncoder
          ) -> tuple[np.ndarray, np.ndarray]:
    empty = (np.zeros(0, f"S{KEY_BYTES}"), np.zeros((0, encoder.dim), np.float32))
    if cache_dir is None:
        return empty
    path = cache_path(cache_dir, encoder.name)
    if not path.is_file():
        return empty
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys, vecs = npz["keys"], npz["vectors"].astype(np.float32)
    except (OSError, ValueError, KeyError, EOFError) as exc:
        log.warning("ignoring unreadable text cache %s (%s): encoding again", path, exc)
        return empty
    if vecs.shape != (len(keys), encoder.dim):
        log.warning("ignoring text cache %s: shape %s, expected [*, %d]", path, vecs.shape,
                    encoder.dim)
        return empty
    return keys, vecs


def _save(path: Path, keys: np.ndarray, vecs: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, keys=keys, vectors=vecs)
