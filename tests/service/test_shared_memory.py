"""Workers share one copy of a version (issue 21): the tables, the scorer's item table, the
FAISS index and the id maps are mapped read-only from the artifact, with scores identical to
the earlier layout (tables read into memory, the item table inside `scorer.onnx` with a pad
row, id maps built as dicts from the JSON lists).

Memory is measured from /proc/<pid>/smaps_rollup, never by timing: a second process loading
the same version while a first holds it must add little private memory (its pages of the
mapped files are shared with the first), while the earlier layout adds a private copy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models import artifact as art
from models.artifact_arrays import read_arrays
from models.config import ModelConfig
from models.registry import build_model, build_scorer_graph
from models.scorer_io import scorer_feed
from service.loader import load_artifact
from training import exporter
from training.interactions import Interactions
from training.scorer_graph import export_onnx

ROOT = Path(__file__).resolve().parents[2]
N_USERS, DIM, N_MEMORY, L_MAX = 40, 8, 4, 6


def planted_log(n_users: int, n_items: int, seed: int = 0) -> Interactions:
    """Every user and item once, users drawn to items of their own block (planted taste)."""
    rng = np.random.default_rng(seed)
    users = np.concatenate([np.arange(n_users), rng.integers(0, n_users, 4 * n_users)])
    items = (users * 7919 + rng.integers(0, 50, len(users))) % n_items
    items = np.concatenate([np.arange(n_items), items])
    users = np.concatenate([rng.integers(0, n_users, n_items), users])
    return Interactions.from_ids([f"u{u}" for u in users], [f"i{i}" for i in items],
                                 timestamps=rng.integers(0, 10_000, len(users)))


def make_model(kind: str, n_users: int, n_items: int, dim: int = DIM):
    torch.manual_seed(0)
    return build_model(ModelConfig(kind=kind, dim=dim, n_memory=N_MEMORY, l_max=L_MAX),
                       n_users, n_items).eval()


def export_old_layout(model, vdir: Path) -> None:
    """Rewrite a version as relrec wrote it before issue 21: `np.savez` tables (members at
    whatever offset) and a scorer whose item table (plus a zero pad row) is inside the graph,
    pads gathered from that row; the manifest's checksums follow."""
    arrays = read_arrays(vdir)
    tables = {n: np.array(getattr(arrays, n)) for n in art.TENSOR_NAMES}
    with open(vdir / art.TENSORS, "wb") as f:
        np.savez(f, **tables)
    graph = build_scorer_graph(model)
    n_items, dim = graph.items.shape
    padded = torch.cat([graph.items, graph.items.new_zeros(1, dim)])

    def gather(rows: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        return padded[torch.where(ok, rows, torch.tensor(n_items))]

    graph.gather = gather  # type: ignore[method-assign]
    export_onnx(graph, vdir / art.SCORER)
    drop_mapped_ids(vdir)


def drop_mapped_ids(vdir: Path) -> None:
    """Take a version's mapped id maps away, as versions exported before issue 21 lack them:
    the loader builds them from the JSON lists. The manifest's checksums follow."""
    for name in art.ID_MAP_FILES:
        (vdir / name).unlink(missing_ok=True)
    manifest = art.read_manifest(vdir)
    names = art.PAYLOAD_FILES
    art.write_manifest(vdir, manifest.model_copy(update={
        "files": {n: art.file_sha256(vdir / n) for n in names},
        "sizes": {n: (vdir / n).stat().st_size for n in names}}))


def random_feed(n_items: int, rng: np.random.Generator, batch: int = 6, n_cand: int = 40):
    lengths = np.linspace(0, L_MAX, batch).round().astype(np.int64)
    mask = (np.arange(L_MAX)[None, :] < lengths[:, None]).astype(np.float32)
    cand = rng.integers(0, n_items, (batch, n_cand))
    cand[0, 0] = n_items  # out of range: +inf in both layouts
    return scorer_feed(rng.standard_normal((batch, DIM)).astype(np.float32) * 0.3,
                       rng.integers(0, n_items, (batch, L_MAX)), mask, cand)


@pytest.mark.parametrize("kind", ["cml", "lrml", "hlr", "hlr++", "adacml"])
def test_scores_identical_to_the_earlier_layout(tmp_path: Path, kind: str) -> None:
    """Same model, the new mapped layout and the earlier one: every output bit for bit."""
    n_items = 300
    train = planted_log(N_USERS, n_items)
    model = make_model(kind, N_USERS, n_items)
    new = exporter.export(model, train, tmp_path / "new", choose_retrieval=False)
    old = Path(shutil.copytree(new, tmp_path / "old" / new.name))
    export_old_layout(model, old)
    loaded_new, loaded_old = load_artifact(new), load_artifact(old)
    assert isinstance(loaded_new.arrays.items.base, np.memmap)  # mapped, not read
    assert not isinstance(loaded_old.arrays.items.base, np.memmap)  # unaligned: read
    proto = onnx.load(str(old / art.SCORER), load_external_data=False)
    assert all(i.data_location != onnx.TensorProto.EXTERNAL for i in proto.graph.initializer)
    for seed in range(3):
        feed = random_feed(n_items, np.random.default_rng(seed))
        for a, b in zip(loaded_new.session.run(None, feed), loaded_old.session.run(None, feed),
                        strict=True):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded_new.arrays.items, loaded_old.arrays.items)
    np.testing.assert_array_equal(loaded_new.arrays.users, loaded_old.arrays.users)


def test_faiss_index_is_mapped(tmp_path: Path) -> None:
    """The loader maps the index file: its vectors are file pages, not anonymous memory."""
    n_items = 3000
    vdir = exporter.export(make_model("cml", N_USERS, n_items, dim=32),
                           planted_log(N_USERS, n_items), tmp_path, choose_retrieval=False)
    loaded = load_artifact(vdir)
    maps = Path("/proc/self/maps").read_text()
    assert str(vdir.resolve() / art.INDEX) in maps
    assert str(vdir.resolve() / art.TENSORS) in maps
    _, rows = loaded.index.search(np.ascontiguousarray(loaded.arrays.items[:5]), 1)
    assert rows[:, 0].tolist() == [0, 1, 2, 3, 4]


_ROLLUP = """
import json, sys
from pathlib import Path
import numpy as np
from models.artifact_arrays import read_arrays
from service.loader import load_artifact

def rollup():
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split()[:2]
        out[key.rstrip(":")] = int(value) * 1024
    return out

before = rollup()
"""
_HOLD = """
after = rollup()
print(json.dumps({"before": before, "after": after, "found": found}), flush=True)
sys.stdin.readline()  # hold the version until the test is done
"""
_WORKER = _ROLLUP + """
loaded = load_artifact(Path(sys.argv[1]), ort_threads=1, faiss_threads=1)
loaded.index.search(np.ascontiguousarray(loaded.arrays.items[:8]), 10)
found = None
""" + _HOLD
# The id maps alone (what the loader's read_arrays builds or maps), every page of them touched:
# row -> id -> row for every third row.
_ID_WORKER = _ROLLUP + """
ids = read_arrays(Path(sys.argv[1])).item_ids
found = sum(ids.get(ids.ids[r]) == r for r in range(0, len(ids), 3))
""" + _HOLD


def _worker(vdir: Path, script: str = _WORKER) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, str(vdir)], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                                 "PATH": "/usr/bin:/bin"})


def _second_worker_growth(vdir: Path, script: str = _WORKER) -> dict[str, int]:
    """Private and shared bytes a second process gains by loading `vdir` while a first
    process holds it loaded (and what it found, for the id map script)."""
    first = _worker(vdir, script)
    second = None
    try:
        assert first.stdout is not None
        json.loads(first.stdout.readline())
        second = _worker(vdir, script)
        assert second.stdout is not None
        got = json.loads(second.stdout.readline())
    finally:
        for proc in (p for p in (first, second) if p is not None):
            proc.communicate("\n", timeout=60)
    before, after = got["before"], got["after"]
    private = sum(after[k] - before[k] for k in ("Private_Clean", "Private_Dirty"))
    shared = sum(after[k] - before[k] for k in ("Shared_Clean", "Shared_Dirty"))
    return {"private": private, "shared": shared, "found": got["found"]}


def test_second_worker_shares_the_tables(tmp_path: Path) -> None:
    """A second worker adds at most a quarter of the mapped tables and index as private
    memory (what stays per worker: the id maps' dicts, the sessions), and shares the tables
    it touched; the earlier layout, loaded the same way, adds a private copy of them."""
    n_items, dim = 150_000, 128
    model = make_model("cml", 2000, n_items, dim=dim)
    vdir = exporter.export(model, planted_log(2000, n_items), tmp_path / "new",
                           choose_retrieval=False, index="flat")
    table = n_items * dim * 4  # the item table; the Flat index holds the same again
    mapped = _second_worker_growth(vdir)
    assert mapped["private"] < 0.25 * 2 * table, mapped
    assert mapped["shared"] > 0.9 * table, mapped  # the loader's NaN check read every item
    old = Path(shutil.copytree(vdir, tmp_path / "old" / vdir.name))
    export_old_layout(model, old)
    copied = _second_worker_growth(old)
    assert copied["private"] > 1.5 * table, copied  # tables and the graph's own copy
    assert copied["private"] - mapped["private"] > table


def test_second_worker_shares_the_id_maps(tmp_path: Path) -> None:
    """The id maps are pages of the version too: a second worker that looks up every third
    item adds a few bytes an item of private memory (no per-id objects), where the dict built
    from the JSON list (versions before the mapped id maps) costs over 60 bytes an item."""
    n_items = 200_000
    vdir = exporter.export(make_model("cml", 2000, n_items, dim=4), planted_log(2000, n_items),
                           tmp_path / "new", choose_retrieval=False, index="flat")
    mapped = _second_worker_growth(vdir, _ID_WORKER)
    old = Path(shutil.copytree(vdir, tmp_path / "old" / vdir.name))
    drop_mapped_ids(old)
    built = _second_worker_growth(old, _ID_WORKER)
    assert mapped["found"] == built["found"] == len(range(0, n_items, 3))
    assert mapped["private"] < 8 * n_items, mapped
    assert mapped["shared"] > 0.5 * (vdir / art.ITEM_IDMAP).stat().st_size, mapped
    assert built["private"] > 60 * n_items, built


def test_external_table_is_what_onnx_runtime_reads(tmp_path: Path) -> None:
    """The scorer has no item table of its own: changing tensors.npz's bytes changes its
    distances (a test of the wiring; the loader's checksums refuse such a file)."""
    n_items = 200
    model = make_model("cml", N_USERS, n_items)
    vdir = exporter.export(model, planted_log(N_USERS, n_items), tmp_path,
                           choose_retrieval=False)
    feed = random_feed(n_items, np.random.default_rng(0))
    before = ort.InferenceSession(str(vdir / art.SCORER)).run(None, feed)[0]
    from models.mapped_tables import member_extent

    offset, length, _, _ = member_extent(vdir / art.TENSORS, "items")
    with open(vdir / art.TENSORS, "r+b") as f:
        f.seek(offset)
        f.write(np.zeros(length // 4, np.float32).tobytes())
    after = ort.InferenceSession(str(vdir / art.SCORER)).run(None, feed)[0]
    users = feed["user_vecs"]
    ok = feed["cand_rows"] < n_items
    np.testing.assert_allclose(after[ok], np.broadcast_to(
        (users * users).sum(1)[:, None], after.shape)[ok], rtol=1e-6)
    assert not np.allclose(before[ok], after[ok])


def test_a_graph_torch_writes_in_pieces_ends_as_the_usual_artifact(tmp_path: Path,
                                                                    monkeypatch) -> None:
    """Past 2 GB (an item table of ~5M items at d = 100) torch writes each tensor of the
    scorer in a file beside it and the graph cannot be one protobuf message. Simulated here
    by having the trace write every tensor apart, as torch does then: the export must still
    end with the small tensors inside the graph, the item table read from `tensors.npz`, no
    stray file, and the same scores."""
    from training import scorer_graph

    traced = scorer_graph.torch.onnx.export

    def export_in_pieces(*args, **kwargs):
        traced(*args, **kwargs)
        path = str(args[2])
        proto = onnx.load(path)
        onnx.save(proto, path, save_as_external_data=True, all_tensors_to_one_file=False,
                  size_threshold=0)

    model = make_model("hlr", N_USERS, 300)
    whole = exporter.export(model, planted_log(N_USERS, 300), tmp_path / "whole",
                            parity_check=False, choose_retrieval=False)
    monkeypatch.setattr(scorer_graph.torch.onnx, "export", export_in_pieces)
    # the item table (300 x 8 floats, 9,600 bytes) counts as large, the keys and memories not
    monkeypatch.setattr(scorer_graph, "INLINE_MAX_BYTES", 4096)
    pieces = exporter.export(model, planted_log(N_USERS, 300), tmp_path / "pieces",
                             parity_check=True, choose_retrieval=False)
    assert sorted(p.name for p in pieces.iterdir()) == sorted(p.name for p in whole.iterdir())
    proto = onnx.load(str(pieces / art.SCORER), load_external_data=False)
    external = {i.name: {e.key: e.value for e in i.external_data}["location"]
                for i in proto.graph.initializer
                if i.data_location == onnx.TensorProto.EXTERNAL}
    assert external == {"items": art.TENSORS}
    feed = random_feed(300, np.random.default_rng(1))
    got, want = (ort.InferenceSession(str(v / art.SCORER)).run(None, feed) for v in (pieces, whole))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
