"""The artifact's arrays: item and user tables, id maps, popularity and CSR histories.

The numeric half of the artifact format (`models/artifact.py` holds the file names, the manifest
and the `current` pointer). numpy and json only, no torch, so that the service's loader reads a
version through it. `read_arrays` checks that the sizes of the files agree, so that files of two
versions are never mixed; the loader calls it after `models.artifact.open_version` has checked
the files' sizes and checksums.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.artifact import (
    HISTORY_INDPTR,
    HISTORY_ITEMS,
    ITEM_IDMAP,
    ITEM_IDS,
    POPULARITY,
    TENSOR_NAMES,
    TENSORS,
    USER_IDMAP,
    USER_IDS,
    ArtifactError,
)
from models.idmap import IdMap
from models.mapped_ids import map_ids
from models.mapped_tables import map_tables

__all__ = ["ArtifactArrays", "read_arrays", "user_history"]


@dataclass(frozen=True)
class ArtifactArrays:
    """The numeric content of a version besides the graph and the index.

    Everything is memory-mapped read-only where the files allow (the tables of a
    `models/mapped_tables.py` `tensors.npz`, the id maps of `models/mapped_ids.py`, popularity
    and the CSR histories), so that several workers share one copy; tables of an older,
    unaligned `tensors.npz` are read into memory, and the id maps of a version without the
    mapped files are built from its JSON lists (a dict per worker).
    """

    users: np.ndarray  # [U, d] float32
    items: np.ndarray  # [V, d] float32
    keys: np.ndarray  # [d, N] float32 (N = 0 for CML, AdaCML)
    memories: np.ndarray  # [N, d] float32
    user_ids: IdMap
    item_ids: IdMap
    popularity: np.ndarray  # [V] int64
    history_indptr: np.ndarray  # [U + 1] int64
    history_items: np.ndarray  # [nnz] int64, newest first within a user


def read_arrays(version_dir: Path) -> ArtifactArrays:
    """Load tables, id maps, popularity and histories, checking that their sizes agree."""
    vdir = Path(version_dir)
    tensors = _load_tensors(vdir)
    arrays = ArtifactArrays(
        users=tensors["users"], items=tensors["items"], keys=tensors["keys"],
        memories=tensors["memories"],
        user_ids=_read_ids(vdir, USER_IDMAP, USER_IDS),
        item_ids=_read_ids(vdir, ITEM_IDMAP, ITEM_IDS),
        popularity=_load_npy(vdir / POPULARITY),
        history_indptr=_load_npy(vdir / HISTORY_INDPTR),
        history_items=_load_npy(vdir / HISTORY_ITEMS),
    )
    _check_shapes(vdir, arrays)
    return arrays


def user_history(arrays: ArtifactArrays, user_row: int) -> np.ndarray:
    """A known user's distinct known items (every split since issue 16), newest first; empty
    for an unknown row."""
    indptr = arrays.history_indptr
    if not 0 <= user_row < len(indptr) - 1:
        return np.empty(0, np.int64)
    return np.asarray(arrays.history_items[indptr[user_row]:indptr[user_row + 1]])


def _load_tensors(vdir: Path) -> dict[str, np.ndarray]:
    path = vdir / TENSORS
    try:
        mapped = map_tables(path, TENSOR_NAMES)
        if mapped is not None:
            return mapped
    except KeyError as exc:
        raise ArtifactError(f"{path} lacks {exc}: re-export the version") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        pass  # not mappable: np.load below reads it, or says what is wrong with it
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [n for n in TENSOR_NAMES if n not in npz.files]
            if missing:
                raise ArtifactError(f"{path} lacks {', '.join(missing)}: re-export the version")
            return {n: np.asarray(npz[n], dtype=np.float32) for n in TENSOR_NAMES}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"cannot read {path} ({exc}): truncated or corrupted; re-export "
                            f"the version") from None


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ArtifactError(f"cannot read {path} ({exc}): truncated or corrupted; re-export "
                            f"the version") from None


def _read_ids(vdir: Path, mapped_name: str, json_name: str) -> IdMap:
    """The mapped id map where the version has one (issue 21), else the JSON list's."""
    path = vdir / mapped_name
    if path.is_file():
        try:
            return IdMap.mapped(map_ids(path))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ArtifactError(f"cannot read {path} ({exc}): truncated or corrupted; "
                                f"re-export the version") from None
    return _read_json_ids(vdir / json_name)


def _read_json_ids(path: Path) -> IdMap:
    try:
        ids = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read {path} ({exc}): truncated or corrupted; re-export "
                            f"the version") from None
    if not isinstance(ids, list):
        raise ArtifactError(f"{path} must hold a JSON list of ids (position = row)")
    try:
        return IdMap.from_ids(ids)
    except ValueError as exc:
        raise ArtifactError(f"{path}: {exc}") from None


def _check_shapes(vdir: Path, a: ArtifactArrays) -> None:
    """Sizes that must agree across files; a mismatch means files from different versions."""
    n_users, n_items = len(a.user_ids), len(a.item_ids)
    dim = a.items.shape[1] if a.items.ndim == 2 else -1
    checks = {
        "users is [len(user_ids), d]": a.users.shape == (n_users, dim),
        "items is [len(item_ids), d]": a.items.shape == (n_items, dim),
        "keys is [d, N]": a.keys.ndim == 2 and a.keys.shape[0] == dim,
        "memories is [N, d]": a.memories.shape == (a.keys.shape[1], dim),
        "popularity is [len(item_ids)]": a.popularity.shape == (n_items,),
        "history_indptr is [len(user_ids) + 1]": a.history_indptr.shape == (n_users + 1,),
        "history_indptr ends at len(history_items)": (
            len(a.history_indptr) > 0 and int(a.history_indptr[-1]) == len(a.history_items)),
    }
    broken = [name for name, ok in checks.items() if not ok]
    if broken:
        raise ArtifactError(f"inconsistent arrays in {vdir} ({'; '.join(broken)}): files from "
                            f"different versions were mixed; copy the version again or re-export")
