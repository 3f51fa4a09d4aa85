"""`relrec export-interactions`: the history store's durable log -> a CSV for training.

Reads the log in pages (`HistoryStore.read_log`) and writes `user,item,rating,timestamp` (the
header `training.readers.read_log` maps to its roles; rating is the posted weight, timestamp
epoch seconds). Written to a temp file and renamed, so a reader never sees half a file; the
last cursor is returned so that the next export can start after it (`after=`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from models.durable import atomic_path
from service.history import open_history_store

__all__ = ["ExportSummary", "export_interactions"]

HEADER = ("user", "item", "rating", "timestamp")


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    rows: int
    last_cursor: str | None  # pass as `after` to export only what came later


def export_interactions(
    history_url: str, out: str | Path, *, after: str | None = None, page: int = 10_000
) -> ExportSummary:
    """Write every logged interaction after cursor `after` (None: all) to CSV at `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    store = open_history_store(history_url, max_len=1)
    rows, cursor = 0, after
    try:
        with atomic_path(out, sync=True) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(HEADER)
            while entries := store.read_log(cursor, page):
                for entry in entries:
                    e = entry.event
                    writer.writerow((e.user_id, e.item_id, repr(e.weight), e.timestamp))
                rows += len(entries)
                cursor = entries[-1].cursor
    finally:
        store.close()
    return ExportSummary(out, rows, cursor)
