"""`relrec export-interactions`: the history store's durable log -> a CSV for training.

Reads the log in pages (`HistoryStore.read_log`) and writes `user,item,rating,timestamp` (the
header `training.readers.read_log` maps to its roles; rating is the posted weight, timestamp
epoch seconds). Only positives go there, so that training reads the file as before; negative
feedback (`type: negative`, issue 22) goes to its own CSV when `negatives_out` is given (the
same columns), for a training run that samples them as known negatives. Each file is written
to a temp file and renamed, so a reader never sees half a file; the last cursor is returned so
that the next export can start after it (`after=`).
"""

from __future__ import annotations

import contextlib
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.durable import atomic_path
from service.history import open_history_store

__all__ = ["ExportSummary", "export_interactions"]

HEADER = ("user", "item", "rating", "timestamp")


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    rows: int  # positives written to `path`
    last_cursor: str | None  # pass as `after` to export only what came later
    negatives: int = 0  # negatives written to `negatives_out` (skipped without it)


def export_interactions(
    history_url: str,
    out: str | Path,
    *,
    after: str | None = None,
    page: int = 10_000,
    negatives_out: str | Path | None = None,
) -> ExportSummary:
    """Write every logged positive after cursor `after` (None: all) to CSV at `out`, and the
    negatives to `negatives_out` when given."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    store = open_history_store(history_url, max_len=1)
    counts, cursor = {"positive": 0, "negative": 0}, after
    try:
        with contextlib.ExitStack() as stack:
            writers = {"positive": _csv_writer(stack, out)}
            if negatives_out is not None:
                writers["negative"] = _csv_writer(stack, Path(negatives_out))
            while entries := store.read_log(cursor, page):
                for entry in entries:
                    e = entry.event
                    writer = writers.get(e.type)
                    if writer is not None:
                        writer.writerow((e.user_id, e.item_id, repr(e.weight), e.timestamp))
                        counts[e.type] += 1
                cursor = entries[-1].cursor
    finally:
        store.close()
    return ExportSummary(out, counts["positive"], cursor, counts["negative"])


def _csv_writer(stack: contextlib.ExitStack, path: Path) -> Any:
    """A CSV writer on a temp file renamed to `path` when `stack` closes without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = stack.enter_context(atomic_path(path, sync=True))
    f = stack.enter_context(open(tmp, "w", newline="", encoding="utf-8"))
    writer = csv.writer(f)
    writer.writerow(HEADER)
    return writer
