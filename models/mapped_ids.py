"""An id map that every worker maps from the artifact instead of building a dict (issue 21).

A Python dict of 1M str ids (with its str objects and the object array of ids) costs ~150 MB
in every uvicorn worker: at 1M items it was the largest private part of a worker. Here the map
is a file of the version, memory-mapped read-only, so that the page cache holds one copy for
all the workers and a worker's private cost does not grow with the catalogue.

Layout: one page-aligned `.npz` per map (`models.mapped_tables.write_tables`), four members:

- `blob` uint8 [B]: the ids' UTF-8 bytes in row order, concatenated;
- `offsets` int64 [n + 1]: the id of row r is `blob[offsets[r]:offsets[r + 1]]`;
- `hashes` uint32 [n]: the CRC-32 of every id's bytes, sorted ascending;
- `order` int64 [n]: the row of each sorted hash.

id -> row: CRC-32 of the id, bisect in `hashes`, then compare the bytes of each row in the run
of equal hashes (at most a few) with the id's. row -> id: a slice of `blob`. Why this layout
and not the others considered:

- a sorted fixed-width array (numpy `S<w>`) costs n x the longest id (one 200-byte id among
  1M 8-byte ids makes 200 MB), strips trailing NUL bytes, and `np.searchsorted` copies the whole
  array when the query is wider than w; blob + offsets cost each id its own length;
- sorting the ids themselves would need a bisect that compares variable-length byte strings
  in Python (~20 slices a lookup); sorting fixed-size hashes lets the bisect run in C, on a
  memoryview for one id (`bisect`) or `np.searchsorted` for a batch (one call), and compare
  bytes once, to confirm;
- a hash table file (open addressing) saves the bisect's ~20 C steps but needs a table sized
  by its load factor, and every probe that meets another id compares bytes; sorted hashes
  cost 12 bytes an id besides the ids' bytes;
- CRC-32 (`zlib.crc32`) rather than a cryptographic hash: ~0.2 µs an id against ~2 µs for
  `hashlib.blake2b` here, and stable across processes and Python versions (str's `hash()` is
  salted per process). Its 32 bits collide (~n²/2³³ pairs: ~120 among 1M ids); colliding ids
  are adjacent in the sort and a lookup confirms by bytes, so a collision costs one more
  comparison, never a wrong row.

Ids are encoded UTF-8 with `surrogatepass`, so every str a JSON list can carry (lone surrogates
included) round-trips. Items PUT at run time are appended through `extended` (a small dict
beside the mapped rows). numpy, zlib and bisect only, for the service.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from models.mapped_tables import map_members, write_tables

__all__ = ["MEMBERS", "MappedIds", "map_ids", "write_ids"]

MEMBERS = ("blob", "offsets", "hashes", "order")
_DTYPES = {"blob": np.uint8, "offsets": np.int64, "hashes": np.uint32, "order": np.int64}
_ENCODING = ("utf-8", "surrogatepass")


def write_ids(path: Path, ids: Sequence[str]) -> None:
    """Write `ids` (position = row) in the mapped layout; ValueError names a repeated id."""
    keys = [str(x).encode(*_ENCODING) for x in ids]
    lengths = np.fromiter(map(len, keys), np.int64, len(keys))
    offsets = np.concatenate([np.zeros(1, np.int64), np.cumsum(lengths)])
    hashes = np.fromiter(map(zlib.crc32, keys), np.uint32, len(keys))
    order = np.argsort(hashes, kind="stable").astype(np.int64)
    _reject_repeats(keys, hashes[order], order)
    write_tables(path, {"blob": np.frombuffer(b"".join(keys), np.uint8), "offsets": offsets,
                        "hashes": hashes[order], "order": order})


def _reject_repeats(keys: list[bytes], sorted_hashes: np.ndarray, order: np.ndarray) -> None:
    """A repeated id has a repeated hash: compare bytes within the (few) runs of equal hashes."""
    same = np.flatnonzero(sorted_hashes[1:] == sorted_hashes[:-1])  # hash k == hash k + 1
    runs: dict[int, set[bytes]] = {}
    for k in same.tolist():
        run = runs.setdefault(int(sorted_hashes[k]), {keys[order[k]]})
        key = keys[order[k + 1]]
        if key in run:
            raise ValueError(f"repeated id {key.decode(*_ENCODING)!r}: ids must be unique")
        run.add(key)


def map_ids(path: Path) -> MappedIds:
    """The map at `path`, its members mapped read-only (read into memory if they cannot be)."""
    members = map_members(path, MEMBERS)
    if members is None:
        with np.load(path, allow_pickle=False) as npz:
            members = {name: np.asarray(npz[name]) for name in MEMBERS}
    return MappedIds(members)


class MappedIds:
    """Both directions over the mapped members, plus rows appended at run time.

    What `models.idmap.IdMap` holds for a loaded version: its `ids` (indexable by a row, an
    array of rows or a slice, iterable, `np.asarray`-able like the object array of an
    in-memory map) and its lookup (`get`, `get_many`).
    """

    def __init__(self, members: dict[str, np.ndarray], extra: Sequence[str] = ()) -> None:
        for name, dtype in _DTYPES.items():
            if members[name].dtype != dtype or members[name].ndim != 1:
                raise ValueError(f"id map member {name} is {members[name].dtype} "
                                 f"{members[name].shape}, expected 1-d {np.dtype(dtype)}")
        self._members = members
        self._hashes = members["hashes"]  # [n] uint32, sorted: np.searchsorted's haystack
        self._n = len(self._hashes)
        if members["order"].shape != (self._n,) or members["offsets"].shape != (self._n + 1,):
            raise ValueError("id map members disagree on the number of ids")
        # memoryviews: indexing one yields a Python int in ~40 ns (a numpy scalar costs more,
        # and a Python int searched in a uint32 array makes numpy copy the array)
        self._h = _ints(self._hashes, "I")
        self._order = _ints(members["order"], "q")
        self._offsets = _ints(members["offsets"], "q")
        self._blob = np.ascontiguousarray(members["blob"]).data.cast("B")
        self._extra = list(extra)
        self._extra_rows = {x: self._n + i for i, x in enumerate(self._extra)}
        if len(self._extra_rows) != len(self._extra) or any(
                self.find(x) >= 0 for x in self._extra):
            raise ValueError("IdMap ids must be unique")

    def extended(self, ids: Sequence[str]) -> MappedIds:
        """This map with `ids` appended as rows `len(self) ..`; the mapped rows are shared."""
        return MappedIds(self._members, [*self._extra, *(str(x) for x in ids)])

    # -- id -> row --------------------------------------------------------------------------

    def find(self, external_id: str) -> int:
        """The mapped row of an id, -1 when it has none (appended rows not included)."""
        key = external_id.encode(*_ENCODING)
        h = zlib.crc32(key)
        return self._confirm(key, h, bisect_left(self._h, h))

    def get(self, external_id: str, default: int = -1) -> int:
        row = self.find(external_id)
        if row < 0:
            return self._extra_rows.get(external_id, default)
        return row

    def get_many(self, external_ids: Sequence[str], default: int = -1) -> np.ndarray:
        """Rows of many ids at once (one `np.searchsorted`), `default` where unknown."""
        keys = [x.encode(*_ENCODING) for x in external_ids]
        hashes = np.fromiter(map(zlib.crc32, keys), np.uint32, len(keys))  # [Q] as the file's
        rows = self._find_many(keys, hashes)
        if self._extra_rows and (rows < 0).any():
            extra = self._extra_rows.get
            rows = np.fromiter((r if r >= 0 else extra(x, -1)
                                for r, x in zip(rows.tolist(), external_ids, strict=True)),
                               np.int64, len(keys))
        if default != -1:
            rows[rows < 0] = default
        return rows

    def _find_many(self, keys: list[bytes], hashes: np.ndarray) -> np.ndarray:
        """Mapped rows of `keys` (-1: none): the first row of each hash's run is gathered for
        all keys at once and confirmed by one bytes comparison a key; a key that differs from
        it (a CRC collision) goes on through the run with `_confirm`."""
        if not self._n:
            return np.full(len(keys), -1, np.int64)
        starts = np.searchsorted(self._hashes, hashes)  # [Q]; same dtype: no copy
        at = np.minimum(starts, self._n - 1)
        rows = np.where(self._hashes[at] == hashes, self._members["order"][at], -1)  # [Q]
        offsets = self._members["offsets"]
        blob, confirm = self._blob, self._confirm
        found = [row if row < 0 or blob[b:e] == key else confirm(key, h, s + 1)
                 for key, row, b, e, h, s in zip(keys, rows.tolist(), offsets[rows].tolist(),
                                                 offsets[rows + 1].tolist(), hashes.tolist(),
                                                 starts.tolist(), strict=True)]
        return np.asarray(found, dtype=np.int64).reshape(len(keys))

    def _confirm(self, key: bytes, h: int, k: int) -> int:
        """The row among the run of hash `h` starting at sorted position `k` whose bytes are
        `key`, or -1."""
        hashes, order, offsets, blob = self._h, self._order, self._offsets, self._blob
        while k < self._n and hashes[k] == h:
            row = order[k]
            if blob[offsets[row]:offsets[row + 1]] == key:
                return row
            k += 1
        return -1

    # -- row -> id: the `ids` column ----------------------------------------------------------

    def __len__(self) -> int:
        return self._n + len(self._extra)

    @property
    def shape(self) -> tuple[int]:
        """As the object array's: callers that read `ids.shape[0]` keep working."""
        return (len(self),)

    def id_of(self, row: int) -> str:
        if row < 0:
            row += len(self)
        if row >= self._n:
            return self._extra[row - self._n]
        return str(self._blob[self._offsets[row]:self._offsets[row + 1]], *_ENCODING)

    def __getitem__(self, rows: Any) -> Any:
        """An id for an int row (as the object array gives it); an object array of ids for an
        array of rows, a boolean mask or a slice."""
        if isinstance(rows, int | np.integer):
            if not -len(self) <= rows < len(self):
                raise IndexError(f"row {rows} out of range for {len(self)} ids")
            return self.id_of(int(rows))
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(len(self)))
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        out = np.empty(rows.shape, dtype=object)
        out.reshape(-1)[:] = [self[int(r)] for r in rows.reshape(-1)]
        return out

    def __iter__(self) -> Iterator[str]:
        return (self.id_of(r) for r in range(len(self)))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.empty(len(self), dtype=object)
        out[:] = list(self)
        return out if dtype is None else out.astype(dtype)


def _ints(array: np.ndarray, fmt: Literal["I", "q"]) -> memoryview[int]:
    return np.ascontiguousarray(array).data.cast("B").cast(fmt)
