"""Readers: the entry of the offline path, from an interaction log on disk to `Interactions`.

`read_log(path)` reads MovieLens (100k `u.data`, 1M `ratings.dat`, latest `ratings.csv`),
Amazon review JSON lines, Last.fm `user_artists.dat`, and generic CSV/TSV/Parquet logs, and
returns the *raw* log: ratings or play counts in `weights`, timestamps when the source has them,
external ids kept as strings (so "0012" stays "0012"), rows dense by first appearance. Nothing
is filtered here; thresholds and k-cores are `training/filters.py`. Parsing is done by pandas'
C reader, so ML-1M (1M rows) loads in about a second.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import logging
import lzma
import re
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from training.config import FORMATS
from training.interactions import DataError, Interactions

__all__ = ["FORMATS", "ROLES", "detect_format", "read_log"]

logger = logging.getLogger(__name__)

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
# Delimiters a generic CSV/TSV is sniffed for, the format's own first on a tie.
_SNIFFED = (",", "\t", ";", "|")
_SNIFF_LINES = 20


@dataclass(frozen=True)
class _TextSpec:
    """How a delimited text format is laid out: separator, and names when there is no header."""

    sep: str
    names: tuple[str, ...] | None = None  # None: the first line is a header
    sniff: bool = False  # generic files: the delimiter is sniffed among _SNIFFED


_TEXT_SPECS: dict[str, _TextSpec] = {
    "ml-100k": _TextSpec("\t", ROLES),
    "ml-1m": _TextSpec("::", ROLES),
    "ml-latest": _TextSpec(",", sniff=True),
    "lastfm": _TextSpec("\t"),
    "csv": _TextSpec(",", sniff=True),
    "tsv": _TextSpec("\t", sniff=True),
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
    columns: list[str] | dict[str, str] | None = None,
    sep: str | None = None,
) -> Interactions:
    """Read an interaction log into raw `Interactions` (no threshold, no k-core).

    `fmt` overrides detection from the file name. `columns` as a list names the columns of a
    headerless text file positionally (roles or their aliases: user, item, rating, timestamp;
    other names are read and ignored); for Parquet it renames the columns positionally. As a
    mapping role -> column (`{"user": "member", "item": "show"}`) it picks the role columns of
    a file with a header (or JSON fields); roles it leaves out are found by their aliases.
    `sep` overrides the format's separator; generic CSV/TSV files are otherwise sniffed for
    ',', tab, ';' and '|'. Without a rating column every weight is 1; without a timestamp column
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


def _resolve_roles(names: list[str], path: Path,
                   given: dict[str, str] | None = None) -> dict[str, str]:
    """Map each role to the column that holds it; `DataError` when user or item is missing.

    `given` (role -> column, from `--columns user=member,...`) wins; the other roles are found
    by their aliases among the remaining columns.
    """
    found = _given_roles(names, path, given or {})
    normalised: dict[str, str] = {}
    for name in names:
        normalised.setdefault(re.sub(r"[\s_\-]", "", str(name).lower()), str(name))
    for role, aliases in _ALIASES.items():
        if role in found:
            continue
        match = next((normalised[a] for a in aliases if a in normalised), None)
        if match is not None and match not in found.values():
            found[role] = match
    for role in _REQUIRED:
        if role not in found:
            raise DataError(
                f"{str(path)!r} has no {role} column (looked for {', '.join(_ALIASES[role])}); "
                f"its columns are: {', '.join(map(str, names))}. Name it with --columns "
                f"{role}=COLUMN, or name a headerless file's columns in order (--columns "
                f"user,item,rating)"
            )
    return found


def _given_roles(names: list[str], path: Path, given: dict[str, str]) -> dict[str, str]:
    """Check a role -> column mapping against the roles and the file's columns."""
    unknown = sorted(set(given) - set(ROLES))
    if unknown:
        raise DataError(f"columns names unknown role(s) {', '.join(unknown)}; the roles are "
                        f"{', '.join(ROLES)} (e.g. --columns user=member,item=show)")
    present = {str(n) for n in names}
    for role, column in given.items():
        if column not in present:
            raise DataError(f"columns {role}={column}: {str(path)!r} has no column {column!r}; "
                            f"its columns are: {', '.join(map(str, names))}")
    if len(set(given.values())) != len(given):
        raise DataError(f"columns must name distinct columns, got {given}")
    return dict(given)


def _read_text(path: Path, spec: _TextSpec, columns: list[str] | dict[str, str] | None,
               sep: str | None) -> pd.DataFrame:
    """Delimited text through pandas' C parser; compression is inferred from the suffix."""
    if sep is None and spec.sniff:
        sep = _sniff_delimiter(path, spec.sep)
    sep = spec.sep if sep is None else sep
    given = columns if isinstance(columns, dict) else None
    names = tuple(columns) if isinstance(columns, list) else spec.names
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
            if len(header) == 1 and sep != ":":
                raise DataError(_one_column(path, sep, str(header[0])))
            roles = _resolve_roles(header, path, given)
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


def _one_column(path: Path, sep: str, first: str) -> str:
    return (f"{str(path)!r}: found one column with the delimiter {sep!r} (first line: "
            f"{first[:80]!r}); the delimiter is sniffed among "
            f"{', '.join(map(repr, _SNIFFED))}: write the file with one of them, or pass "
            f"the right format (--format)")


def _sniff_delimiter(path: Path, default: str) -> str:
    """The delimiter of `_SNIFFED` that splits the first lines into the same, largest number of
    fields (quotes respected); `default` when none splits them or on a tie."""
    lines = _head_lines(path)
    if not lines:
        return default
    best, best_score = default, (False, 1)
    for candidate in (default, *(c for c in _SNIFFED if c != default)):
        counts = [len(row) for row in csv.reader(lines, delimiter=candidate)]
        score = (len(set(counts)) == 1, min(counts))
        if score[1] > 1 and score > best_score:
            best, best_score = candidate, score
    if best_score[1] <= 1:
        raise DataError(_one_column(path, default, lines[0]))
    return best


def _head_lines(path: Path) -> list[str]:
    """The first non-empty lines of a text file, through its compression (by suffix)."""
    suffix = path.suffix.lower()
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(suffix)
    if suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            raw = archive.open(archive.namelist()[0]).read(1 << 16)
    elif suffix == ".zst":
        return []  # no stdlib reader; the format's own delimiter is used
    else:
        with (opener or open)(path, "rb") as fh:
            raw = fh.read(1 << 16)
    lines = raw.decode("utf-8", errors="replace").splitlines()
    if len(raw) == 1 << 16:
        lines = lines[:-1]  # the last line may be cut
    return [line for line in lines if line.strip()][:_SNIFF_LINES]


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


def _read_parquet(path: Path, columns: list[str] | dict[str, str] | None) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except (ValueError, OSError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"cannot read {str(path)!r} as Parquet ({err}); is it another "
                        f"format? Pass the right one with --format ({', '.join(FORMATS)}) "
                        f"or leave it out to detect it from the name") from None
    given = columns if isinstance(columns, dict) else None
    if isinstance(columns, list):
        if len(columns) > frame.shape[1]:
            raise DataError(f"columns names {len(columns)} columns but {str(path)!r} has "
                            f"{frame.shape[1]}: {', '.join(map(str, frame.columns))}")
        frame = frame.iloc[:, : len(columns)].set_axis(list(columns), axis=1)
    roles = _resolve_roles(frame.columns.tolist(), path, given)
    return frame[list(roles.values())].rename(columns={c: r for r, c in roles.items()})


def _read_json_lines(path: Path, columns: list[str] | dict[str, str] | None) -> pd.DataFrame:
    """JSON lines in chunks, keeping only the role columns (review text is dropped early)."""
    if isinstance(columns, list):
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
                roles = roles or _resolve_roles(chunk.columns.tolist(), path,
                                                columns or None)
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
