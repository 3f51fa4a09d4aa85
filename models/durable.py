"""Crash-safe writes: fsync, and write-to-a-temporary-name-then-rename.

The one copy of both, for everything relrec writes that a reader may open while it is being
replaced or after a crash: the artifact's manifest and `current` pointer (`models.artifact`),
the version directory (`training.exporter`), the run's checkpoint files, the text-embedding
cache and `relrec export-interactions`' CSV. Standard library only: the service imports it too.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "fsync_path"]


def fsync_path(path: Path) -> None:
    """fsync a file, or a directory so that renames and new entries in it survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path, *, sync: bool = False) -> Iterator[Path]:
    """A temporary name beside `path` to write to; renamed over `path` when the block ends.

    rename(2) is atomic on POSIX, so a reader sees the old file or the new one, never half of
    one. With `sync`, the data is fsynced before the rename (what must survive a crash). If the
    block or the rename fails, the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        if sync:
            fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
