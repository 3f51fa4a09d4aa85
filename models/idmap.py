"""IdMap: external string ids <-> dense rows.

Shared by the offline path (readers, exporter) and the online path (loader), so it lives in
`models/` and imports numpy only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class IdMap:
    """Bijection between external string ids and dense rows 0..n-1 (row = position in `ids`)."""

    ids: np.ndarray  # [n] object array of str
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self._index:
            self._index.update({str(x): i for i, x in enumerate(self.ids)})
        if len(self._index) != len(self.ids):
            raise ValueError("IdMap ids must be unique")

    @classmethod
    def from_ids(cls, ids: Iterable[object]) -> IdMap:
        return cls(np.asarray([str(x) for x in ids], dtype=object))

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: object) -> bool:
        return str(item_id) in self._index

    def row(self, external_id: object) -> int:
        """Row of one external id; KeyError names the id when it is unknown."""
        try:
            return self._index[str(external_id)]
        except KeyError:
            raise KeyError(f"unknown id {external_id!r}") from None

    def get(self, external_id: object, default: int = -1) -> int:
        """Row of an id, or `default` when unknown (the service's fast path)."""
        return self._index.get(str(external_id), default)

    def rows(self, external_ids: Sequence[object]) -> np.ndarray:
        return np.fromiter((self.row(x) for x in external_ids), dtype=np.int64,
                           count=len(external_ids))

    def subset(self, rows: np.ndarray) -> IdMap:
        """The map restricted to `rows` (in that order), re-densified."""
        return IdMap(self.ids[np.asarray(rows, dtype=np.int64)])

    def to_list(self) -> list[str]:
        return [str(x) for x in self.ids]

