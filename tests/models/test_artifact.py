"""The artifact format (models/artifact.py): reading, verification and the `current` pointer.

Versions here are written by hand with numpy/json, so these tests exercise the format alone
(no torch, as in the service); test_exporter.py covers artifacts written by the exporter.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from models import artifact as art
from models.artifact_arrays import read_arrays, user_history
from models.mapped_ids import write_ids


def write_version(
    root: Path, name: str, n_users: int = 5, n_items: int = 7, dim: int = 4, n_memory: int = 3
) -> Path:
    """A complete, consistent version directory with its manifest and checksums."""
    rng = np.random.default_rng(len(name))
    vdir = root / name
    vdir.mkdir(parents=True)
    with open(vdir / art.TENSORS, "wb") as f:
        np.savez(
            f,
            users=rng.standard_normal((n_users, dim)).astype(np.float32),
            items=rng.standard_normal((n_items, dim)).astype(np.float32),
            keys=rng.standard_normal((dim, n_memory)).astype(np.float32),
            memories=rng.standard_normal((n_memory, dim)).astype(np.float32),
        )
    (vdir / art.SCORER).write_bytes(b"onnx-bytes" * 10)
    (vdir / art.INDEX).write_bytes(b"faiss-bytes" * 10)
    (vdir / art.USER_IDS).write_text(json.dumps([f"u{i}" for i in range(n_users)]))
    (vdir / art.ITEM_IDS).write_text(json.dumps([f"i{i}" for i in range(n_items)]))
    np.save(vdir / art.POPULARITY, np.arange(n_items, dtype=np.int64))
    np.save(vdir / art.HISTORY_INDPTR, np.array([0, 2, 2, 3, 3, 3], np.int64)[: n_users + 1])
    np.save(vdir / art.HISTORY_ITEMS, np.array([4, 1, 6], np.int64))
    manifest = art.Manifest(
        format_version=art.FORMAT_VERSION,
        version=name,
        relrec_version="test",
        created_at=datetime.now(UTC),
        model={"kind": "hlr", "dim": dim},
        dim=dim,
        n_memory=n_memory,
        l_max=3,
        counts=art.Counts(users=n_users, items=n_items, interactions=3),
        data_fingerprint="abc",
        index=art.IndexInfo(factory="Flat"),
        onnx=art.OnnxInfo(opset=17, inputs={}, outputs={}),
        files={n: art.file_sha256(vdir / n) for n in art.PAYLOAD_FILES},
        sizes={n: (vdir / n).stat().st_size for n in art.PAYLOAD_FILES},
    )
    art.write_manifest(vdir, manifest)
    return vdir


@pytest.fixture()
def version(tmp_path: Path) -> Path:
    return write_version(tmp_path, "20260101T000000Z-aaaaaa")


def test_roundtrip(version: Path) -> None:
    manifest = art.read_manifest(version)
    art.verify(version, manifest)
    arrays = read_arrays(version)
    assert manifest.kind == "hlr" and manifest.counts.items == 7
    assert arrays.keys.shape == (4, 3) and arrays.memories.shape == (3, 4)
    assert arrays.user_ids.row("u3") == 3 and arrays.item_ids.row("i6") == 6
    assert user_history(arrays, 0).tolist() == [4, 1]
    assert user_history(arrays, 1).tolist() == []
    assert user_history(arrays, -1).tolist() == [] and user_history(arrays, 99).size == 0


def test_open_version_resolves_and_verifies(version: Path) -> None:
    art.point_current(version.parent, version.name)
    vdir, manifest = art.open_version(version.parent)
    assert vdir == version.resolve() and manifest.version == version.name
    (version / art.POPULARITY).write_bytes(b"")
    with pytest.raises(art.ArtifactError, match=art.POPULARITY):
        art.open_version(version, checksums=False)


@pytest.mark.parametrize("name", art.PAYLOAD_FILES)
def test_truncated_file_is_refused_naming_it(version: Path, name: str) -> None:
    manifest = art.read_manifest(version)
    path = version / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for checksums in (True, False):  # the size check alone catches truncation
        with pytest.raises(art.ArtifactError, match=name):
            art.verify(version, manifest, checksums=checksums)


@pytest.mark.parametrize("name", art.PAYLOAD_FILES)
def test_flipped_byte_is_refused_naming_it(version: Path, name: str) -> None:
    manifest = art.read_manifest(version)
    path = version / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(art.ArtifactError, match=rf"{name}.*sha256"):
        art.verify(version, manifest)


def test_missing_file_is_refused_naming_it(version: Path) -> None:
    manifest = art.read_manifest(version)
    (version / art.INDEX).unlink()
    with pytest.raises(art.ArtifactError, match=rf"{art.INDEX} is missing"):
        art.verify(version, manifest)


def test_manifest_without_a_checksum_is_refused(version: Path) -> None:
    manifest = art.read_manifest(version)
    files = {k: v for k, v in manifest.files.items() if k != art.SCORER}
    with pytest.raises(art.ArtifactError, match=art.SCORER):
        art.verify(version, manifest.model_copy(update={"files": files}))


def test_manifest_cannot_point_outside_the_version(version: Path) -> None:
    manifest = art.read_manifest(version)
    files = dict(manifest.files, **{"../outside.npy": "0" * 64})
    with pytest.raises(art.ArtifactError, match="not a file name"):
        art.verify(version, manifest.model_copy(update={"files": files}))


def test_foreign_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(art.ArtifactError, match="not a relrec artifact"):
        art.read_manifest(tmp_path)
    with pytest.raises(art.ArtifactError, match="does not exist"):
        art.read_manifest(tmp_path / "nope")
    (tmp_path / art.MANIFEST).write_text(json.dumps({"name": "something else"}))
    with pytest.raises(art.ArtifactError, match="no format_version"):
        art.read_manifest(tmp_path)


def test_other_format_version_is_refused(version: Path) -> None:
    raw = json.loads((version / art.MANIFEST).read_text())
    raw["format_version"] = art.FORMAT_VERSION + 1
    (version / art.MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(art.ArtifactError, match=rf"format version {art.FORMAT_VERSION + 1}"):
        art.read_manifest(version)


def test_truncated_or_invalid_manifest_is_refused(version: Path) -> None:
    path = version / art.MANIFEST
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(art.ArtifactError, match="not valid JSON"):
        art.read_manifest(version)
    raw = json.loads(text)
    del raw["files"]
    path.write_text(json.dumps(raw))
    with pytest.raises(art.ArtifactError, match="files"):
        art.read_manifest(version)


def test_mixed_files_are_refused(tmp_path: Path) -> None:
    a = write_version(tmp_path, "a", n_items=7)
    b = write_version(tmp_path, "b", n_items=9)
    (a / art.ITEM_IDS).write_bytes((b / art.ITEM_IDS).read_bytes())
    with pytest.raises(art.ArtifactError, match="items is"):
        read_arrays(a)


def test_current_pointer(tmp_path: Path) -> None:
    with pytest.raises(art.ArtifactError, match="no `current`"):
        art.resolve_current(tmp_path)
    with pytest.raises(art.ArtifactError, match="does not exist"):
        art.resolve_current(tmp_path / "missing")
    v1 = write_version(tmp_path, "20260101T000000Z-aaaaaa")
    v2 = write_version(tmp_path, "20260102T000000Z-bbbbbb")
    (tmp_path / ".tmp-20260103T000000Z-cccccc").mkdir()  # an unfinished export
    art.point_current(tmp_path, v1.name)
    assert art.resolve_current(tmp_path) == v1.resolve()
    art.point_current(tmp_path, v2.name)
    assert art.resolve_current(tmp_path) == v2.resolve()
    assert os.readlink(tmp_path / art.CURRENT) == v2.name  # relative: the root can move
    assert art.list_versions(tmp_path) == [v1.name, v2.name]
    assert art.resolve_version_dir(tmp_path) == v2.resolve()
    assert art.resolve_version_dir(v1) == v1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".current")]


def test_current_refuses_incomplete_targets(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    for bad in ("half", "missing", "../x", "current"):
        with pytest.raises(art.ArtifactError):
            art.point_current(tmp_path, bad)
    assert not (tmp_path / art.CURRENT).exists()


def test_dangling_current_is_explained(tmp_path: Path) -> None:
    os.symlink("gone", tmp_path / art.CURRENT)
    with pytest.raises(art.ArtifactError, match="points at"):
        art.resolve_current(tmp_path)


def test_failed_swap_keeps_the_old_pointer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = write_version(tmp_path, "v1")
    v2 = write_version(tmp_path, "v2")
    art.point_current(tmp_path, v1.name)

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(art.os, "replace", broken_replace)
    with pytest.raises(OSError):
        art.point_current(tmp_path, v2.name)
    monkeypatch.undo()
    assert art.resolve_current(tmp_path) == v1.resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "v1", "v2"]


def test_readers_never_see_a_missing_pointer(tmp_path: Path) -> None:
    """Swap `current` back and forth while another thread resolves it: every read succeeds
    and names one of the two versions (rename(2) replaces the link atomically)."""
    names = [write_version(tmp_path, n).name for n in ("v1", "v2")]
    art.point_current(tmp_path, names[0])
    stop = threading.Event()
    seen: set[str] = set()
    errors: list[Exception] = []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.add(art.resolve_current(tmp_path).name)
            except Exception as exc:  # any failure is the bug this test looks for
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(300):
        art.point_current(tmp_path, names[i % 2])
    stop.set()
    reader.join()
    assert not errors
    assert seen <= set(names)


# -- the id maps: mapped where the version has the files (issue 21), else built from JSON ---


def add_mapped_ids(vdir: Path) -> None:
    """Give a version the mapped id maps an exporter since issue 21 writes, with checksums."""
    manifest = art.read_manifest(vdir)
    files, sizes = dict(manifest.files), dict(manifest.sizes)
    for name, json_name in ((art.USER_IDMAP, art.USER_IDS), (art.ITEM_IDMAP, art.ITEM_IDS)):
        write_ids(vdir / name, json.loads((vdir / json_name).read_text()))
        files[name] = art.file_sha256(vdir / name)
        sizes[name] = (vdir / name).stat().st_size
    art.write_manifest(vdir, manifest.model_copy(update={"files": files, "sizes": sizes}))


def test_a_version_without_mapped_id_maps_still_loads(version: Path) -> None:
    """A version exported before issue 21: its maps are built from the JSON lists."""
    arrays = read_arrays(version)
    assert not arrays.item_ids.is_mapped and not arrays.user_ids.is_mapped
    assert arrays.item_ids.to_list() == [f"i{i}" for i in range(7)]
    assert arrays.item_ids.get("i9") == -1 and arrays.user_ids.row("u4") == 4


def test_mapped_id_maps_are_read_and_equal_the_json(version: Path) -> None:
    add_mapped_ids(version)
    art.verify(version, art.read_manifest(version))
    arrays = read_arrays(version)
    assert arrays.item_ids.is_mapped and arrays.user_ids.is_mapped
    assert arrays.item_ids.to_list() == json.loads((version / art.ITEM_IDS).read_text())
    assert arrays.user_ids.to_list() == json.loads((version / art.USER_IDS).read_text())
    assert arrays.item_ids.get("i6") == 6 and arrays.item_ids.get("i7") == -1


@pytest.mark.parametrize("name", art.ID_MAP_FILES)
def test_a_damaged_mapped_id_map_is_refused_naming_it(version: Path, name: str) -> None:
    add_mapped_ids(version)
    manifest = art.read_manifest(version)
    path = version / name
    data = bytearray(path.read_bytes())
    data[-40] ^= 0xFF  # in the zip's directory
    path.write_bytes(bytes(data))
    with pytest.raises(art.ArtifactError, match=rf"{name}.*sha256"):
        art.verify(version, manifest)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(art.ArtifactError, match=rf"cannot read .*{name}"):
        read_arrays(version)  # past the loader's checks: an error that names it, no crash
