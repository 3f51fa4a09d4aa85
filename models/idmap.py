"""IdMap: external string ids <-> dense rows.

Shared by the offline path (readers, exporter) and the online path (loader), so it lives in
`models/` and imports numpy only. Two stores behind one interface:

- in memory (`IdMap(ids)`, `IdMap.from_ids`): a dict beside an object array, for the maps
  training builds (readers, splits, the exporter) and for small maps;
- mapped (`IdMap.mapped`): a version's id map file (`models/mapped_ids.py`), read-only pages
  every worker shares (issue 21), which is what the service's loader returns. A dict of 1M ids
  costs ~150 MB in each worker; the mapped store costs its pages once, for all workers.

Callers see the same methods either way; `ids` is the object array or the mapped column
(indexable by a row or an array of rows, iterable, `np.asarray`-able).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from models.mapped_ids import MappedIds


class _DictLookup:
    """The in-memory store's id -> row."""

    __slots__ = ("index",)

    def __init__(self, ids: Iterable[object]) -> None:
        self.index = {str(x): i for i, x in enumerate(ids)}

    def __len__(self) -> int:
        return len(self.index)

    def get(self, external_id: str, default: int = -1) -> int:
        return self.index.get(external_id, default)

    def get_many(self, external_ids: Sequence[str], default: int = -1) -> np.ndarray:
        get = self.index.get
        return np.fromiter((get(x, default) for x in external_ids), np.int64,
                           count=len(external_ids))


class IdMap:
    """Bijection between external string ids and dense rows 0..n-1 (row = position in `ids`)."""

    __slots__ = ("_lookup", "ids")

    ids: np.ndarray | MappedIds  # [n] object array of str, or the mapped column

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids
        self._lookup: _DictLookup | MappedIds = _DictLookup(ids)
        if len(self._lookup) != len(ids):
            raise ValueError("IdMap ids must be unique")

    @classmethod
    def from_ids(cls, ids: Iterable[object]) -> IdMap:
        return cls(np.asarray([str(x) for x in ids], dtype=object))

    @classmethod
    def mapped(cls, store: MappedIds) -> IdMap:
        """The map over a mapped store (`models.mapped_ids.map_ids`): nothing is copied."""
        out = cls.__new__(cls)
        out.ids = store
        out._lookup = store
        return out

    @property
    def is_mapped(self) -> bool:
        return isinstance(self._lookup, MappedIds)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: object) -> bool:
        return self._lookup.get(str(item_id), -1) >= 0

    def __repr__(self) -> str:
        return f"IdMap({len(self)} ids, {'mapped' if self.is_mapped else 'in memory'})"

    def row(self, external_id: object) -> int:
        """Row of one external id; KeyError names the id when it is unknown."""
        row = self._lookup.get(str(external_id), -1)
        if row < 0:
            raise KeyError(f"unknown id {external_id!r}")
        return row

    def get(self, external_id: object, default: int = -1) -> int:
        """Row of an id, or `default` when unknown (the service's fast path)."""
        return self._lookup.get(str(external_id), default)

    def get_rows(self, external_ids: Sequence[object], default: int = -1) -> np.ndarray:
        """Rows of many ids, `default` where unknown: one call for a history or a filter
        (the mapped store searches them in one `np.searchsorted`)."""
        return self._lookup.get_many([str(x) for x in external_ids], default)

    def rows(self, external_ids: Sequence[object]) -> np.ndarray:
        """Rows of many ids; KeyError names the first unknown one."""
        rows = self.get_rows(external_ids)
        if (rows < 0).any():
            raise KeyError(f"unknown id {external_ids[int(np.argmax(rows < 0))]!r}")
        return rows

    def subset(self, rows: np.ndarray) -> IdMap:
        """The map restricted to `rows` (in that order), re-densified, in memory."""
        return IdMap(np.asarray(self.ids[np.asarray(rows, dtype=np.int64)], dtype=object))

    def extended(self, ids: Sequence[object]) -> IdMap:
        """This map with `ids` appended as rows `len(self) ..` (items PUT at run time,
        service/item_overlay.py): a mapped map stays mapped, with a small dict for the new
        rows. ValueError when an id repeats or is already mapped."""
        if isinstance(self.ids, MappedIds):
            return IdMap.mapped(self.ids.extended([str(x) for x in ids]))
        return IdMap.from_ids([*self.to_list(), *ids])

    def to_list(self) -> list[str]:
        return [str(x) for x in self.ids]

    def __getstate__(self) -> Any:
        if self.is_mapped:  # pages of a version are not sent to another process
            raise TypeError("a mapped IdMap cannot be pickled; pickle IdMap(np.asarray(ids))")
        return self.ids

    def __setstate__(self, state: Any) -> None:
        IdMap.__init__(self, state)
