"""The artifact: the on-disk format between the offline and the online path (DESIGN §3).

`training/exporter.py` writes one directory per version plus a `current` symlink; the service's
loader reads them through the functions here and nothing else. This module is numpy, json and
pydantic only (no torch, no faiss, no onnxruntime) so that the serving image can import it. It
owns the file names, the `Manifest`, checksum verification with errors that say what to do and
the atomic `current` pointer; `models/artifact_arrays.py` reads the arrays (tables, id maps,
popularity, CSR histories). The layout is documented in docs/architecture.md ("Artifact").
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.artifact_index import IndexInfo, RecallPoint, RetrievalInfo
from models.artifact_pools import POOL_FILES, POOL_PROBES, POOL_RADIUS, POOL_ROWS, PoolsInfo
from models.artifact_text import (
    SCORER_VECTORS,
    TEXT_ENCODER,
    TEXT_PROJECTION,
    TOKENIZER,
    TextItemsInfo,
    TextModelInfo,
)
from models.durable import atomic_path, fsync_path

__all__ = [
    "CURRENT", "FORMAT_VERSION", "HISTORY_INDPTR", "HISTORY_ITEMS", "ID_MAP_FILES", "INDEX",
    "ITEM_IDMAP", "ITEM_IDS", "MANIFEST", "PAYLOAD_FILES", "POOL_FILES", "POOL_PROBES",
    "POOL_RADIUS", "POOL_ROWS", "POPULARITY", "SCORER", "TENSORS", "USER_IDMAP", "USER_IDS",
    "ArtifactError", "Counts", "FoldInInfo", "IndexInfo", "Manifest", "PoolsInfo",
    "OnnxInfo", "RecallPoint", "RetrievalInfo", "SCORER_VECTORS", "TEXT_ENCODER",
    "TEXT_PROJECTION", "TOKENIZER", "TensorSpec", "TextItemsInfo", "TextModelInfo",
    "TrainingInfo",
    "file_sha256", "list_versions", "open_version", "point_current",
    "read_manifest", "resolve_current", "resolve_version_dir", "verify",
    "write_manifest",
]

# Bumped on any change a reader of the previous format would misread.
FORMAT_VERSION = 1

MANIFEST = "manifest.json"
SCORER = "scorer.onnx"
TENSORS = "tensors.npz"
INDEX = "items.faiss"
USER_IDS = "user_ids.json"
ITEM_IDS = "item_ids.json"
POPULARITY = "popularity.npy"
HISTORY_INDPTR = "history_indptr.npy"
HISTORY_ITEMS = "history_items.npy"
CURRENT = "current"
# Every file of a version besides the manifest; each one is checksummed in `Manifest.files`.
PAYLOAD_FILES: tuple[str, ...] = (
    SCORER, TENSORS, INDEX, USER_IDS, ITEM_IDS, POPULARITY, HISTORY_INDPTR, HISTORY_ITEMS,
)
# The id maps laid out to be memory-mapped (models/mapped_ids.py, issue 21): written beside the
# JSON lists (which stay the ids' reference) and checksummed in `Manifest.files` like the rest.
# Optional, so that FORMAT_VERSION stays: a version written before has none and loads by
# building its maps from the JSON lists; an older relrec reads a version that has them.
USER_IDMAP = "user_idmap.npz"
ITEM_IDMAP = "item_idmap.npz"
ID_MAP_FILES: tuple[str, ...] = (USER_IDMAP, ITEM_IDMAP)
# Arrays of tensors.npz: users [U, d], items [V, d], keys [d, N], memories [N, d] (float32).
TENSOR_NAMES: tuple[str, ...] = ("users", "items", "keys", "memories")

_EXPORT_HINT = "export a run with `relrec export RUN_DIR --out ARTIFACTS_DIR`"


class ArtifactError(Exception):
    """An artifact is missing, incomplete, corrupted or of another format; the message says
    which file and what to do."""


class Counts(BaseModel):
    """Sizes of the exported model and its training data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(ge=0)
    items: int = Field(ge=0)
    interactions: int = Field(ge=0)


class FoldInInfo(BaseModel):
    """How the service fits a vector for a user known only by their history (issue 16).

    `method` names a closed form the service implements in numpy (`service/foldin.py`):
    `hinge` (the relational models: projected steps of the training hinge; params: margin),
    `least_squares` (ALS: x = (YᵀCY + λI)⁻¹ YᵀC p; params: regularization, confidence),
    `constant` (most popular: every user has `users[0]`). The manifest declares it so that the
    service never branches on the model kind.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["hinge", "least_squares", "constant"]
    params: dict[str, float] = Field(default_factory=dict)


class TrainingInfo(BaseModel):
    """How the served model was fitted: on the training split, or refit on every
    interaction (`relrec train --final`) after selecting on validation (issue 16)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    refit: bool = False  # True: trained on train + valid + test with the selected epochs
    epochs: int | None = None  # epochs of the served model
    selection_metrics: dict[str, Any] = Field(default_factory=dict)  # the selection run's
    history: Literal["train", "all"] = "train"  # what history_*.npy holds for each user


class TensorSpec(BaseModel):
    """dtype and shape of one graph input or output; str dims are dynamic ("B", "C")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: str
    shape: list[int | str]


class OnnxInfo(BaseModel):
    """The scorer graph's signature; `graph` holds how the arithmetic was arranged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    opset: int
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    graph: dict[str, Any] = Field(default_factory=dict)


class Manifest(BaseModel):
    """`manifest.json`: what a version is, how it was made, and the checksum of every file.

    `model` is the `ModelConfig` dump (kind and every hyper-parameter) from which the model can
    be rebuilt; `config` the whole resolved training configuration when known. Unknown keys are
    ignored so that a reader of this format version accepts additive fields.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    format_version: int
    version: str
    relrec_version: str
    created_at: datetime
    model: dict[str, Any]
    dim: int = Field(gt=0)
    n_memory: int = Field(ge=0)  # 0 for the memory-free models (CML, AdaCML)
    l_max: int = Field(gt=0)
    counts: Counts
    data_fingerprint: str
    metrics: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] | None = None
    index: IndexInfo
    onnx: OnnxInfo
    files: dict[str, str]  # file name -> sha256 hex
    sizes: dict[str, int] = Field(default_factory=dict)  # file name -> bytes (truncation check)
    text_items: TextItemsInfo | None = None  # None: every item was trained on interactions
    # None: trained without item text (or before issue 20): no item can be placed from text
    text_model: TextModelInfo | None = None
    # None (versions before issue 16): a relational model, fold-in by the hinge
    fold_in: FoldInInfo | None = None
    training: TrainingInfo | None = None  # None: trained on the train split (before issue 16)
    # None (versions before issue 18, baselines): the service's fallback C and efSearch
    retrieval: RetrievalInfo | None = None
    # None: no per-user candidate pools (versions before them, `--pools off`, baselines)
    pools: PoolsInfo | None = None

    @property
    def kind(self) -> str:
        """The model kind ("cml", "lrml", "hlr", "hlr++", "adacml", "serml", "als", "pop")."""
        return str(self.model["kind"])

    def is_text_only(self, item_row: int) -> bool:
        """Whether an item row got its vector from its text alone (no interaction)."""
        info = self.text_items
        return info is not None and info.first_row <= item_row < info.first_row + info.count

    @property
    def has_attention(self) -> bool:
        """Whether `scorer.onnx` also outputs the attention over the history (HLR, HLR++)."""
        return "attention" in self.onnx.outputs


# -- checksums and durability -----------------------------------------------------------------


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in chunks (tables can be hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# -- manifest ---------------------------------------------------------------------------------


def write_manifest(version_dir: Path, manifest: Manifest) -> Path:
    """Write `manifest.json` atomically (temp file, fsync, rename): never half a manifest."""
    path = Path(version_dir) / MANIFEST
    with atomic_path(path, sync=True) as tmp:
        tmp.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def read_manifest(version_dir: Path) -> Manifest:
    """Parse and validate `manifest.json` of a version directory.

    Refuses, naming the directory: a missing directory or manifest (not an artifact, or an
    export that never finished), unreadable JSON (truncated), another format version, and
    fields that do not validate.
    """
    vdir = Path(version_dir)
    if not vdir.is_dir():
        raise ArtifactError(f"artifact version directory {vdir} does not exist; {_EXPORT_HINT}")
    path = vdir / MANIFEST
    if not path.is_file():
        raise ArtifactError(
            f"{vdir} has no {MANIFEST}: it is not a relrec artifact version (or its export did not "
            f"finish). Point at a version directory, or at the artifacts root holding "
            f"`{CURRENT}`; {_EXPORT_HINT}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(
            f"{path} is not valid JSON ({exc}); the file is truncated or corrupted: re-export "
            f"the version") from None
    if not isinstance(raw, dict) or "format_version" not in raw:
        raise ArtifactError(f"{path} has no format_version: not a relrec artifact manifest")
    found = raw["format_version"]
    if found != FORMAT_VERSION:
        raise ArtifactError(
            f"{vdir} is artifact format version {found!r}, this relrec reads version "
            f"{FORMAT_VERSION}: re-export it with this relrec version (or serve it with the "
            f"relrec version that wrote it)")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ArtifactError(f"{path} does not validate ({fields}): re-export the version") from None


def verify(version_dir: Path, manifest: Manifest, checksums: bool = True) -> None:
    """Check that every file is present, of the recorded size and (by default) checksum.

    `checksums=False` checks presence and size only: a cheap test that still catches a
    truncated copy. Raises ArtifactError naming the first file that fails.
    """
    vdir = Path(version_dir)
    if manifest.format_version != FORMAT_VERSION:
        raise ArtifactError(
            f"{vdir} is artifact format version {manifest.format_version}, this relrec reads "
            f"version {FORMAT_VERSION}: re-export it")
    missing = [name for name in PAYLOAD_FILES if name not in manifest.files]
    if missing:
        raise ArtifactError(f"{vdir / MANIFEST} lists no checksum for {', '.join(missing)}: "
                            f"the manifest is incomplete; re-export the version")
    for name, expected in manifest.files.items():
        if Path(name).name != name or name in ("", ".", ".."):
            raise ArtifactError(f"{vdir / MANIFEST} lists {name!r}, which is not a file name "
                                f"inside the version: a foreign or tampered manifest")
        _verify_file(vdir, name, expected, manifest.sizes.get(name), checksums)


def _verify_file(vdir: Path, name: str, sha256: str, size: int | None, checksum: bool) -> None:
    path = vdir / name
    if not path.is_file():
        raise ArtifactError(f"artifact file {name} is missing from {vdir}: the copy is "
                            f"incomplete; copy the whole version directory again or re-export")
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise ArtifactError(f"artifact file {name} in {vdir} has {actual_size} bytes, the "
                            f"manifest says {size}: the file is truncated or was replaced; "
                            f"copy the version again or re-export")
    if checksum and file_sha256(path) != sha256:
        raise ArtifactError(f"artifact file {name} in {vdir} does not match its sha256 in "
                            f"{MANIFEST}: the file is corrupted or was modified; copy the version "
                            f"again or re-export")


# -- versions and the `current` pointer -------------------------------------------------------


def list_versions(artifacts_dir: Path) -> list[str]:
    """Names of the complete versions (directories with a manifest), oldest first.

    Version names start with a UTC timestamp, so name order is age order; unfinished exports
    (hidden `.tmp-*` directories) and `current` are not versions.
    """
    root = Path(artifacts_dir)
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir()
        if not p.name.startswith(".") and p.name != CURRENT and not p.is_symlink()
        and p.is_dir() and (p / MANIFEST).is_file()
    )


def resolve_current(artifacts_dir: Path) -> Path:
    """The version directory that `artifacts_dir/current` points at."""
    root = Path(artifacts_dir)
    link = root / CURRENT
    if not root.is_dir():
        raise ArtifactError(f"artifacts directory {root} does not exist; {_EXPORT_HINT}")
    if not link.is_symlink() and not link.exists():
        raise ArtifactError(f"{root} has no `{CURRENT}` pointer: no version was exported there "
                            f"yet; {_EXPORT_HINT}")
    target = link.resolve()
    if not target.is_dir():
        raise ArtifactError(f"{link} points at {target}, which does not exist: point it at a "
                            f"version again (re-export, or training.exporter's point_current)")
    return target


def resolve_version_dir(path: Path) -> Path:
    """A version directory as is, or the current version of an artifacts root."""
    p = Path(path)
    return p if (p / MANIFEST).is_file() else resolve_current(p)


def open_version(path: Path, checksums: bool = True) -> tuple[Path, Manifest]:
    """Resolve (a version dir, or a root's `current`), read the manifest and verify the files:
    what a loader does before it trusts anything in the directory."""
    vdir = resolve_version_dir(path)
    manifest = read_manifest(vdir)
    verify(vdir, manifest, checksums=checksums)
    return vdir, manifest


def point_current(artifacts_dir: Path, version: str) -> Path:
    """Point `artifacts_dir/current` at `version`, atomically.

    A new symlink is made under a temporary name and renamed over `current` (rename(2) is
    atomic on POSIX), so a reader sees the old version or the new one, never neither. The
    target is relative, so the artifacts directory can be moved or mounted elsewhere.
    """
    root = Path(artifacts_dir)
    target = root / version
    if "/" in version or version in ("", ".", "..", CURRENT):
        raise ArtifactError(f"{version!r} is not a version name")
    if not (target / MANIFEST).is_file():
        raise ArtifactError(f"cannot point {CURRENT} at {target}: it is not a complete version "
                            f"(no {MANIFEST})")
    link = root / CURRENT
    if link.exists() and not link.is_symlink():
        raise ArtifactError(f"{link} exists and is not a symlink; move it away so that relrec "
                            f"can manage the pointer")
    with atomic_path(link) as tmp:
        os.symlink(version, tmp)
    fsync_path(root)
    return link
