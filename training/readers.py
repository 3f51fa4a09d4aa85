"""Readers: the entry of the offline path, from an interaction log on disk to `Interactions`.

`read_log(path)` reads MovieLens (100k `u.data`, 1M `ratings.dat`, latest `ratings.csv`),
Amazon review JSON lines, Last.fm `user_artists.dat`, and generic CSV/TSV/Parquet logs, and
returns the *raw* log: ratings or play counts in `weights`, timestamps when the source has them,
external ids kept as strings (so "0012" stays "0012"), rows dense by first appearance. Nothing
is filtered here; thresholds and k-cores are `training/filters.py`. Parsing is done by pandas'
C reader, so ML-1M (1M rows) loads in about a second.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from training.interactions import DataError, Interactions

__all__ = ["FORMATS", "ROLES", "detect_format", "read_log"]

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = (
    "ml-100k", "ml-1m", "ml-latest", "amazon", "lastfm", "csv", "tsv", "parquet",
)
ROLES: tuple[str, ...] = ("user", "item", "rating", "timestamp")
_REQUIRED = ("user", "item")

# Accepted column names per role, compared after lower-casing and dropping "_", "-" and spaces;
# the first match in this order wins (Amazon 2023 has both `asin` and `parent_asin`).
_ALIASES: dict[str, tuple[str, ...]] = {
    "user": ("user", "userid", "reviewerid", "uid", "customerid", "visitorid"),
    "item": ("item", "itemid", "movieid", "asin", "parentasin", "artistid", "trackid",
             "productid", "songid", "iid"),
    "rating": ("rating", "weight", "overall", "score", "playcount", "plays", "count", "stars"),
    "timestamp": ("timestamp", "unixreviewtime", "time", "ts", "datetime", "date"),
}
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zip", ".zst")
_ML100K_NAME = re.compile(r"u\d?\.(data|base|test)|u[ab]\.(base|test)")
_JSON_CHUNK = 100_000


@dataclass(frozen=True)
class _TextSpec:
    """How a delimited text format is laid out: separator, and names when there is no header."""

    sep: str
    names: tuple[str, ...] | None = None  # None: the first line is a header


_TEXT_SPECS: dict[str, _TextSpec] = {
    "ml-100k": _TextSpec("\t", ROLES),
    "ml-1m": _TextSpec("::", ROLES),
    "ml-latest": _TextSpec(","),
    "lastfm": _TextSpec("\t"),
    "csv": _TextSpec(","),
    "tsv": _TextSpec("\t"),
}


def detect_format(path: str | Path) -> str:
    """Format of a log from its file name (compression suffixes ignored); see `FORMATS`."""
    name = Path(path).name.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    if _ML100K_NAME.fullmatch(name):
        return "ml-100k"
    exact = {"ratings.dat": "ml-1m", "ratings.csv": "ml-latest", "user_artists.dat": "lastfm"}
    if name in exact:
        return exact[name]
    by_suffix = {".json": "amazon", ".jsonl": "amazon", ".ndjson": "amazon", ".csv": "csv",
                 ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}
    for suffix, fmt in by_suffix.items():
        if name.endswith(suffix):
            return fmt
    raise DataError(f"cannot tell the format of {str(path)!r} from its name; pass the format "
                    f"(fmt= / --format), one of: {', '.join(FORMATS)}")


def read_log(
    path: str | Path,
    fmt: str | None = None,
    columns: list[str] | None = None,
    sep: str | None = None,
) -> Interactions:
    """Read an interaction log into raw `Interactions` (no threshold, no k-core).

    `fmt` overrides detection from the file name. `columns` names the columns of a headerless
    text file positionally (roles or their aliases: user, item, rating, timestamp; other names
    are read and ignored); for Parquet it renames the columns positionally. `sep` overrides the
    format's separator. Without a rating column every weight is 1; without a timestamp column
    `timestamps` is None.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {str(path)!r}")
    fmt = _normalise_format(fmt) if fmt is not None else detect_format(path)
    start = time.perf_counter()
    if fmt == "parquet":
        frame = _read_parquet(path, columns)
    elif fmt == "amazon":
        frame = _read_json_lines(path, columns)
    else:
        frame = _read_text(path, _TEXT_SPECS[fmt], columns, sep)
    inter = _to_interactions(frame, path)
    logger.info("read %d interactions (%d users, %d items) from %s as %s in %.1fs",
                len(inter), inter.n_users, inter.n_items, path, fmt,
                time.perf_counter() - start)
    return inter


def _normalise_format(fmt: str) -> str:
    key = fmt.strip().lower().replace("_", "-")
    aliases = {"ml100k": "ml-100k", "ml1m": "ml-1m", "json": "amazon", "jsonl": "amazon",
               "parq": "parquet"}
    key = aliases.get(key.replace("-", ""), key)
    if key not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
    return key


def _resolve_roles(names: list[str], path: Path) -> dict[str, str]:
    """Map each role to the column that holds it; `DataError` when user or item is missing."""
    normalised: dict[str, str] = {}
    for name in names:
        normalised.setdefault(re.sub(r"[\s_\-]", "", str(name).lower()), str(name))
    found: dict[str, str] = {}
    for role, aliases in _ALIASES.items():
        match = next((normalised[a] for a in aliases if a in normalised), None)
        if match is not None and match not in found.values():
            found[role] = match
    for role in _REQUIRED:
        if role not in found:
            raise DataError(
                f"{str(path)!r} has no {role} column (looked for {', '.join(_ALIASES[role])}); "
                f"its columns are: {', '.join(map(str, names))}. Rename the column, or name "
                f"the columns positionally with columns=[...] (--columns) for a headerless file"
            )
    return found


def _read_text(path: Path, spec: _TextSpec, columns: list[str] | None,
               sep: str | None) -> pd.DataFrame:
    """Delimited text through pandas' C parser; compression is inferred from the suffix."""
    sep = spec.sep if sep is None else sep
    names = tuple(columns) if columns is not None else spec.names
    kwargs: dict[str, object] = {"skipinitialspace": True}
    if sep == "::":
        # The C parser takes one-character separators only; on "a::b::c" the ':' split yields
        # empty fields between the values, which are named and dropped (ids hold no ':').
        sep, names = ":", _interleave_blanks(names)
    if len(sep) > 1:
        kwargs["engine"] = "python"
    try:
        if names is None:
            header = pd.read_csv(path, sep=sep, nrows=0, **kwargs).columns.tolist()
            roles = _resolve_roles(header, path)
            return _read_csv_roles(path, roles, sep=sep, **kwargs)
        if len(set(names)) != len(names):
            raise DataError(f"columns must be distinct names, got {list(names)}")
        roles = _resolve_roles(list(names), path)
        with warnings.catch_warnings():
            # naming fewer columns than the file has (e.g. only user,item) is deliberate
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            return _read_csv_roles(path, roles, sep=sep, header=None, names=list(names),
                                   index_col=False, **kwargs)
    except pd.errors.EmptyDataError:
        raise DataError(f"{str(path)!r} is empty: no header and no interactions") from None
    except pd.errors.ParserError as err:
        raise DataError(f"cannot parse {str(path)!r} with separator {sep!r}: {err}; pass "
                        f"sep= or the right format (--format)") from None


def _interleave_blanks(names: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if names is None:
        return None
    out: list[str] = []
    for i, name in enumerate(names):
        out += [name] if i == 0 else [f"__blank{i}", name]
    return tuple(out)


def _read_csv_roles(path: Path, roles: dict[str, str], **kwargs: object) -> pd.DataFrame:
    """Read only the role columns, ids as strings, and rename them to the role names."""
    ids = {roles["user"]: str, roles["item"]: str}
    frame = pd.read_csv(path, usecols=list(roles.values()), dtype=ids, **kwargs)
    return frame.rename(columns={col: role for role, col in roles.items()})


def _read_parquet(path: Path, columns: list[str] | None) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    if columns is not None:
        if len(columns) > frame.shape[1]:
            raise DataError(f"columns names {len(columns)} columns but {str(path)!r} has "
                            f"{frame.shape[1]}: {', '.join(map(str, frame.columns))}")
        frame = frame.iloc[:, : len(columns)].set_axis(list(columns), axis=1)
    roles = _resolve_roles(frame.columns.tolist(), path)
    return frame[list(roles.values())].rename(columns={c: r for r, c in roles.items()})


def _read_json_lines(path: Path, columns: list[str] | None) -> pd.DataFrame:
    """JSON lines in chunks, keeping only the role columns (review text is dropped early)."""
    if columns is not None:
        raise DataError("columns= names the columns of headerless text files; JSON lines "
                        "name their own fields (user/reviewerID, item/asin, ...)")
    # dtype=False: keep ids as the strings they are (asin "0006428320" must not become an int)
    # and convert no dates, so a field named "timestamp" stays a number.
    reader = pd.read_json(path, lines=True, dtype=False, chunksize=_JSON_CHUNK)
    parts: list[pd.DataFrame] = []
    roles: dict[str, str] | None = None
    try:
        with reader:
            for chunk in reader:
                roles = roles or _resolve_roles(chunk.columns.tolist(), path)
                missing = [c for c in roles.values() if c not in chunk.columns]
                chunk = chunk.reindex(columns=list(roles.values())) if missing else chunk
                parts.append(chunk[list(roles.values())])
    except ValueError as err:
        raise DataError(f"cannot parse {str(path)!r} as JSON lines: {err}") from None
    if roles is None:
        raise DataError(f"{str(path)!r} is empty: no interactions")
    frame = pd.concat(parts, ignore_index=True)
    return frame.rename(columns={c: r for r, c in roles.items()})


def _to_interactions(frame: pd.DataFrame, path: Path) -> Interactions:
    """Validate the role columns and build `Interactions` (rows by first appearance)."""
    if len(frame) == 0:
        raise DataError(f"{str(path)!r} has no interactions (no data rows)")
    user_ids = _clean_ids(frame["user"], "user", path)
    item_ids = _clean_ids(frame["item"], "item", path)
    weights = None
    if "rating" in frame.columns:
        weights = _numeric(frame["rating"], "rating", path).to_numpy(np.float32)
    timestamps = None
    if "timestamp" in frame.columns:
        timestamps = _epoch_seconds(frame["timestamp"], path)
    return Interactions.from_ids(user_ids, item_ids, weights, timestamps)


def _first_bad(mask: pd.Series) -> int:
    """1-based data row number of the first True in `mask`, for error messages."""
    return int(np.flatnonzero(mask.to_numpy())[0]) + 1


def _clean_ids(ids: pd.Series, role: str, path: Path) -> pd.Series:
    missing = ids.isna()
    if missing.any():
        raise DataError(f"{str(path)!r}: {int(missing.sum())} rows have no {role} id "
                        f"(first at data row {_first_bad(missing)})")
    if pd.api.types.is_float_dtype(ids) and bool((ids == np.floor(ids)).all()):
        ids = ids.astype(np.int64)  # 12.0 -> "12", as the id was meant (Parquet, JSON)
    return ids


def _numeric(values: pd.Series, role: str, path: Path) -> pd.Series:
    out = pd.to_numeric(values, errors="coerce")
    bad = out.isna()
    if bad.any():
        row = _first_bad(bad)
        raise DataError(
            f"{str(path)!r}: column {role!r} has {int(bad.sum())} missing or non-numeric values "
            f"(first at data row {row}: {values.iloc[row - 1]!r}); if the file has a header "
            f"row, do not pass columns="
        )
    return out


def _epoch_seconds(values: pd.Series, path: Path) -> np.ndarray:
    """Timestamps as int64: numbers are kept as given; date strings become Unix seconds."""
    # Parquet datetimes skip this: to_numeric would give their internal unit (us, ns), not s.
    if not pd.api.types.is_datetime64_any_dtype(values):
        if pd.api.types.is_numeric_dtype(values):
            return _numeric(values, "timestamp", path).to_numpy(np.int64)
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().all():
            return numbers.to_numpy(np.int64)
    dates = pd.to_datetime(values, utc=True, errors="coerce")  # one format, inferred: fast
    if dates.isna().any():
        dates = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
    bad = dates.isna()
    if bad.any():
        row = _first_bad(bad)
        raise DataError(f"{str(path)!r}: column 'timestamp' has {int(bad.sum())} values that "
                        f"are neither numbers nor dates (first at data row {row}: "
                        f"{values.iloc[row - 1]!r})")
    seconds = (dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.to_numpy(np.int64)
