"""Text readers: review text per (user, item) and item text per item, from the datasets on disk.

Stage: beside `training/readers.py`, for the semantic relations (SERML, LRD; DESIGN §1 "Later").
`read_reviews(path)` reads Amazon review JSON lines into `ReviewTexts` (summary + review text per
reviewed pair); `read_item_text(path)` reads item descriptions into `ItemTexts`: MovieLens
(`movies.csv` title and genres, plus the free-text tags of `tags.csv` beside it), Last.fm
hetrec2011 (`artists.dat` names, plus the tags of `user_taggedartists.dat` / `tags.dat`), or any
CSV/TSV with an item column and a text column. External ids stay strings, as in the interaction
readers, so the texts join the `Interactions` id maps. Nothing here touches a model.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from training.interactions import DataError
from training.readers import _resolve_roles

__all__ = ["ITEM_TEXT_FORMATS", "ItemTexts", "ReviewTexts", "detect_item_text_format",
           "read_item_text", "read_reviews"]

logger = logging.getLogger(__name__)

ITEM_TEXT_FORMATS: tuple[str, ...] = ("movielens", "lastfm", "csv", "tsv")
# Tags kept per item, most frequent first: enough to say what an item is, and it bounds the
# text a sentence encoder truncates anyway (MiniLM reads 256 word pieces).
MAX_TAGS = 20
_TEXT_ALIASES = ("text", "description", "title", "name", "content", "body")


@dataclass(frozen=True)
class ReviewTexts:
    """One text per reviewed (user, item) pair; several reviews of a pair are joined."""

    user_ids: np.ndarray  # [R] object str
    item_ids: np.ndarray  # [R] object str
    texts: list[str]  # [R]
    ratings: np.ndarray | None = None  # [R] float32, NaN where a review has no rating

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class ItemTexts:
    """One non-empty text per item id (items without any text are absent)."""

    item_ids: np.ndarray  # [T] object str
    texts: list[str]  # [T]

    def __len__(self) -> int:
        return len(self.texts)

    def as_dict(self) -> dict[str, str]:
        return dict(zip(self.item_ids.tolist(), self.texts, strict=True))


def read_reviews(path: str | Path) -> ReviewTexts:
    """Review text of every (reviewerID, asin) pair of an Amazon review JSON-lines file.

    The text is `summary. reviewText`: the summary is the reviewer's own one-line gist, which
    SERML's sentence-level attention can pick out. The rating (`overall`) comes along: it is
    the sentiment that supervises SERML's review encoder. Pairs whose text is empty are dropped
    (a blank review supervises nothing); a pair reviewed twice keeps both texts and the mean
    rating.
    """
    path = _existing(path)
    reader = pd.read_json(path, lines=True, dtype=False, chunksize=100_000)
    parts: list[pd.DataFrame] = []
    try:
        with reader:
            for chunk in reader:
                roles = _resolve_roles(chunk.columns.tolist(), path)
                text = _join_fields(chunk, ("summary", "reviewText", "text", "title"))
                rating = (pd.to_numeric(chunk[roles["rating"]], errors="coerce")
                          if "rating" in roles else np.nan)
                parts.append(pd.DataFrame({"user": chunk[roles["user"]].astype(str),
                                           "item": chunk[roles["item"]].astype(str),
                                           "text": text, "rating": rating}))
    except ValueError as err:
        raise DataError(f"cannot parse {str(path)!r} as review JSON lines: {err}") from None
    if not parts:
        raise DataError(f"{str(path)!r} is empty: no reviews")
    frame = pd.concat(parts, ignore_index=True)
    frame = frame[frame["text"].str.len() > 0]
    if frame.empty:
        raise DataError(f"{str(path)!r} has no review text (fields summary/reviewText/text)")
    frame = frame.groupby(["user", "item"], sort=False, as_index=False).agg(
        text=("text", lambda texts: ". ".join(t.rstrip(".") for t in texts)),
        rating=("rating", "mean"))
    logger.info("read %d reviewed pairs from %s", len(frame), path)
    return ReviewTexts(frame["user"].to_numpy(object), frame["item"].to_numpy(object),
                       frame["text"].tolist(), frame["rating"].to_numpy(np.float32))


def detect_item_text_format(path: str | Path) -> str:
    """`movielens` / `lastfm` from a dataset directory or any of its files, else by suffix."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    if (folder / "movies.csv").is_file() and (p.is_dir() or p.name in ("movies.csv",
                                                                       "ratings.csv",
                                                                       "tags.csv")):
        return "movielens"
    if (folder / "artists.dat").is_file() and (p.is_dir() or p.name.endswith(".dat")):
        return "lastfm"
    name = p.name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".tsv", ".tab")):
        return "tsv"
    raise DataError(f"cannot tell the item-text format of {str(path)!r}: pass a MovieLens or "
                    f"Last.fm hetrec directory (or a file in it), or a CSV/TSV with item and "
                    f"text columns; formats: {', '.join(ITEM_TEXT_FORMATS)}")


def read_item_text(path: str | Path, fmt: str | None = None) -> ItemTexts:
    """Item descriptions for LRD and for items with no interactions (cold start).

    `path` is a dataset directory, one of its files (e.g. the `ratings.csv` passed as --data),
    or a CSV/TSV with an item id column and a text column.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"no such file or directory: {str(p)!r}")
    fmt = fmt or detect_item_text_format(p)
    folder = p if p.is_dir() else p.parent
    if fmt == "movielens":
        frame = _movielens_text(folder)
    elif fmt == "lastfm":
        frame = _lastfm_text(folder)
    elif fmt in ("csv", "tsv"):
        frame = _table_text(p, "," if fmt == "csv" else "\t")
    else:
        raise DataError(f"unknown item-text format {fmt!r}; one of {', '.join(ITEM_TEXT_FORMATS)}")
    frame = frame[frame["text"].str.len() > 0].drop_duplicates("item", keep="first")
    logger.info("read text for %d items from %s (%s)", len(frame), p, fmt)
    return ItemTexts(frame["item"].to_numpy(object), frame["text"].tolist())


# -- formats ------------------------------------------------------------------------------------


def _movielens_text(folder: Path) -> pd.DataFrame:
    """`Title (year). Genres: a, b. Tags: x, y.` from movies.csv and (optionally) tags.csv."""
    movies = pd.read_csv(_existing(folder / "movies.csv"), dtype=str, keep_default_na=False)
    genres = movies["genres"].str.replace("(no genres listed)", "", regex=False)
    genres = genres.str.replace("|", ", ", regex=False)
    text = movies["title"].str.strip() + "." + _labelled("Genres", genres)
    tags_path = folder / "tags.csv"
    if tags_path.is_file():
        tags = pd.read_csv(tags_path, dtype=str, keep_default_na=False)
        text = text + _labelled("Tags", _top_tags(movies["movieId"], tags["movieId"],
                                                  tags["tag"]))
    return pd.DataFrame({"item": movies["movieId"].str.strip(), "text": text.str.strip()})


def _lastfm_text(folder: Path) -> pd.DataFrame:
    """`Artist name. Tags: x, y.` from artists.dat and the users' tags (hetrec2011)."""
    artists = pd.read_csv(_existing(folder / "artists.dat"), sep="\t", dtype=str,
                          keep_default_na=False, quoting=3, encoding="utf-8")
    text = artists["name"].str.strip() + "."
    assigned, names = folder / "user_taggedartists.dat", folder / "tags.dat"
    if assigned.is_file() and names.is_file():
        tags = pd.read_csv(assigned, sep="\t", dtype=str, keep_default_na=False)
        # tags.dat is latin-1 (hetrec readme), unlike artists.dat
        vocab = pd.read_csv(names, sep="\t", dtype=str, keep_default_na=False,
                            encoding="latin-1", quoting=3)
        value = dict(zip(vocab["tagID"].str.strip(), vocab["tagValue"].str.strip(),
                         strict=True))
        tag_text = tags["tagID"].str.strip().map(value).fillna("")
        text = text + _labelled("Tags", _top_tags(artists["id"], tags["artistID"], tag_text))
    return pd.DataFrame({"item": artists["id"].str.strip(), "text": text.str.strip()})


def _table_text(path: Path, sep: str) -> pd.DataFrame:
    """A table with an item id column (the interaction readers' aliases) and a text column."""
    frame = pd.read_csv(_existing(path), sep=sep, dtype=str, keep_default_na=False)
    item_col = _resolve_roles([*frame.columns, "__user"], path)["item"]
    # every text-like column, in the table's order (title before description reads naturally)
    text_cols = [c for c in frame.columns
                 if c != item_col and re.sub(r"[\s_\-]", "", c.lower()) in _TEXT_ALIASES]
    if not text_cols:
        raise DataError(f"{str(path)!r} has no text column (looked for "
                        f"{', '.join(_TEXT_ALIASES)}); its columns: {', '.join(frame.columns)}")
    text = _join_fields(frame, text_cols)
    return pd.DataFrame({"item": frame[item_col].str.strip(), "text": text})


# -- helpers ------------------------------------------------------------------------------------


def _top_tags(items: pd.Series, tag_items: pd.Series, tags: pd.Series) -> pd.Series:
    """Each item's distinct tags (lower-cased), most often applied first, at most MAX_TAGS;
    aligned with `items`, "" where an item has none."""
    frame = pd.DataFrame({"item": tag_items.str.strip(), "tag": tags.str.strip().str.lower()})
    frame = frame[frame["tag"].str.len() > 0]
    counts = frame.groupby(["item", "tag"], sort=False).size().reset_index(name="n")
    counts = counts.sort_values(["item", "n", "tag"], ascending=[True, False, True])
    joined = counts.groupby("item", sort=False)["tag"].agg(lambda s: ", ".join(s[:MAX_TAGS]))
    return items.str.strip().map(joined).fillna("")


def _labelled(label: str, values: pd.Series) -> pd.Series:
    return values.map(lambda v: f" {label}: {v}." if v else "")


def _join_fields(frame: pd.DataFrame, fields: tuple[str, ...] | list[str]) -> pd.Series:
    """The present fields joined with ". " (a missing or blank field is skipped)."""
    present = [f for f in fields if f in frame.columns]
    if not present:
        return pd.Series([""] * len(frame), index=frame.index, dtype=object)
    cleaned = [frame[f].fillna("").astype(str).str.strip() for f in present]
    rows = zip(*(c.tolist() for c in cleaned), strict=True)
    joined = [". ".join(p.rstrip(".") for p in parts if p) for parts in rows]
    return pd.Series(joined, index=frame.index, dtype=object)


def _existing(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"no such file: {str(p)!r}")
    return p
