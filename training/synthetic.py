"""Synthetic logs with planted structure: a stand-in for the reader stage in tests and demos.

Writes raw `Interactions` (ratings 1..5, increasing timestamps) in which users form communities
and items form as many blocks, each community drawing mostly from its own block with Zipf-like
popularity inside it: implicit's checkerboard test data generalised to k x k blocks (STYLE,
"Planted data, never downloads"). The planted labels travel inside the external ids
(`u17-c2`, `i40-b1`), so `planted_truth()` recovers them after any filter or split.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.interactions import DataError, Interactions

__all__ = ["planted_interactions", "planted_truth", "write_item_text", "write_sample"]

_USER_ID = re.compile(r"u\d+-c(\d+)")
_ITEM_ID = re.compile(r"i\d+-b(\d+)")
_T0 = 1_600_000_000  # 2020-09-13, seconds
_USER_CHUNK = 1024  # users scored at once: bounds the [chunk, n_items] key matrix


def planted_interactions(
    n_users: int = 300,
    n_items: int = 200,
    n_communities: int = 4,
    items_per_user: int = 20,
    noise: float = 0.05,
    popularity_skew: float = 1.0,
    seed: int = 0,
    with_timestamps: bool = True,
) -> Interactions:
    """A raw log where each user's items come mostly from their community's item block.

    User u is in community u * C // n_users and item v in block v * C // n_items (contiguous,
    balanced). Each user draws `items_per_user` distinct items: Binomial(items_per_user, noise)
    of them uniformly from anywhere, the rest from their block, without replacement, with
    probability ∝ (rank in block + 1) ** -popularity_skew (rank 0 = the block's first item).
    Ratings: items in the user's block get 3/4/5 with p .1/.4/.5, others 1/2/3/4 with
    p .25/.3/.3/.15, so `binarize(4)` keeps mostly planted pairs. Rows are grouped by user, each
    user's items in random order, timestamps increasing along the rows.
    """
    _check_args(n_users, n_items, n_communities, items_per_user, noise, popularity_skew)
    rng = np.random.default_rng(seed)
    community = np.arange(n_users) * n_communities // n_users  # [U]
    block = np.arange(n_items) * n_communities // n_items  # [V]
    rank = np.arange(n_items) - np.searchsorted(block, block)  # [V] position within block
    log_pop = -popularity_skew * np.log1p(rank)  # [V] unnormalised log popularity
    n_noise = rng.binomial(items_per_user, noise, size=n_users)  # [U]
    block_size = np.bincount(block, minlength=n_communities)
    n_in = np.minimum(items_per_user - n_noise, block_size[community])  # [U]
    n_noise = items_per_user - n_in
    chosen = np.concatenate([
        _choose(rng, community[s:s + _USER_CHUNK], block, log_pop, n_in[s:s + _USER_CHUNK],
                n_noise[s:s + _USER_CHUNK])
        for s in range(0, n_users, _USER_CHUNK)
    ])  # [U, V] bool
    users, items = np.nonzero(chosen)
    order = np.lexsort((rng.random(len(users)), users))  # group by user, shuffle within
    users, items = users[order], items[order]
    ratings = _ratings(rng, block[items] == community[users])
    timestamps = _T0 + 3600 * np.arange(len(users), dtype=np.int64) if with_timestamps else None
    user_ids = [f"u{u}-c{community[u]}" for u in users]
    item_ids = [f"i{v}-b{block[v]}" for v in items]
    return Interactions.from_ids(user_ids, item_ids, ratings, timestamps)


def _check_args(n_users: int, n_items: int, n_communities: int, items_per_user: int,
                noise: float, popularity_skew: float) -> None:
    if not 1 <= n_communities <= min(n_users, n_items):
        raise DataError(f"n_communities must be in 1..min(n_users, n_items), got {n_communities}")
    if not 1 <= items_per_user <= n_items:
        raise DataError(f"items_per_user must be in 1..n_items ({n_items}), got {items_per_user}")
    if not 0.0 <= noise <= 1.0:
        raise DataError(f"noise is a fraction in [0, 1], got {noise}")
    if popularity_skew < 0:
        raise DataError(f"popularity_skew must be >= 0, got {popularity_skew}")


def _choose(rng: np.random.Generator, community: np.ndarray, block: np.ndarray,
            log_pop: np.ndarray, n_in: np.ndarray, n_noise: np.ndarray) -> np.ndarray:
    """[B, V] mask of each user's items: n_in from the block, then n_noise from the rest.

    Gumbel-top-k: the k largest log p + Gumbel keys are a draw of k items without replacement
    with probability ∝ p, which vectorises over users (a per-row k via ranks).
    """
    in_block = block[None, :] == community[:, None]  # [B, V]
    gumbel = -np.log(-np.log(rng.random(in_block.shape)))
    keys = np.where(in_block, log_pop[None, :] + gumbel, -np.inf)
    chosen = _top_per_row(keys, n_in)
    noise_keys = np.where(chosen, -np.inf, rng.random(in_block.shape))
    return chosen | _top_per_row(noise_keys, n_noise)


def _top_per_row(keys: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Mask of the k[b] largest keys in each row b (k[b] never exceeds the finite keys)."""
    rank = np.argsort(np.argsort(-keys, axis=1, kind="stable"), axis=1)
    return rank < k[:, None]


def _ratings(rng: np.random.Generator, in_block: np.ndarray) -> np.ndarray:
    planted = rng.choice([3, 4, 5], size=len(in_block), p=[0.1, 0.4, 0.5])
    other = rng.choice([1, 2, 3, 4], size=len(in_block), p=[0.25, 0.3, 0.3, 0.15])
    return np.where(in_block, planted, other).astype(np.float32)


def planted_truth(inter: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """(user_community [n_users], item_block [n_items]) int64, read back from the ids.

    Works on any descendant of `planted_interactions` (filtered, split, re-densified), since
    the labels are part of the external ids.
    """
    return (_labels(inter.users.to_list(), _USER_ID, "user"),
            _labels(inter.items.to_list(), _ITEM_ID, "item"))


def _labels(ids: list[str], pattern: re.Pattern[str], what: str) -> np.ndarray:
    out = np.empty(len(ids), np.int64)
    for row, external_id in enumerate(ids):
        match = pattern.fullmatch(external_id)
        if match is None:
            raise DataError(f"{what} id {external_id!r} was not made by planted_interactions")
        out[row] = int(match.group(1))
    return out


def write_sample(path: str | Path, **kwargs: Any) -> Path:
    """Write `planted_interactions(**kwargs)` as CSV with header user,item,rating,timestamp.

    Compression follows the suffix (`.csv.gz`). The README demo reads it back with `read_log`.
    """
    inter = planted_interactions(**kwargs)
    frame = pd.DataFrame({
        "user": inter.users.ids[inter.user_rows],
        "item": inter.items.ids[inter.item_rows],
        "rating": inter.weights.astype(np.int64),
    })
    if inter.timestamps is not None:
        frame["timestamp"] = inter.timestamps
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


_TOPICS = ("jazz saxophone trumpet", "metal guitar drums", "folk banjo fiddle",
           "opera soprano aria", "techno synth beat", "blues harmonica slide")
_FILLER = ("great", "classic", "album", "live", "record", "best", "new", "sound", "studio")


def write_item_text(inter: Interactions, path: str | Path, seed: int = 0) -> Path:
    """Write item text for the items of a planted log as CSV `item,text`.

    Each item's text names its block's topic (block b gets topic b mod 6, suffixed with b when
    there are more blocks than topics) among shuffled filler words: the text carries the
    planted structure, which is what a text-to-vector projection has to recover for items it
    never saw interacted with.
    """
    rng = np.random.default_rng(seed)
    _, block = planted_truth(inter)
    lines = ["item,text"]
    for item_id, b in zip(inter.items.to_list(), block, strict=True):
        topic = _TOPICS[b % len(_TOPICS)].split()
        if b >= len(_TOPICS):
            topic = [f"{w}{b}" for w in topic]
        words = [*topic, *rng.choice(_FILLER, 3)]
        rng.shuffle(words)
        lines.append(f"{item_id},{' '.join(words)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
