"""Export (training/exporter.py, training/scorer_graph.py): ONNX parity with the models, the
manifest, and the publication rules of `current` (issue 4).

Reference parity as minGPT's HF import test: the same inputs through the model and through
`scorer.onnx` under ONNX Runtime must agree to rtol 1e-5 (plus atol 1e-6 for distances near 0:
see PARITY_ATOL in training/exporter.py) and rank the top 10 identically.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from models import artifact as art
from models.artifact_arrays import read_arrays
from models.config import ModelConfig
from models.registry import build_model, build_scorer_graph
from models.scorer_io import INPUTS
from training import exporter
from training.interactions import Interactions
from training.run_dir import Run, load_run, save_run

KINDS = ["cml", "lrml", "hlr", "hlr++", "adacml"]
N_USERS, N_ITEMS, DIM, N_MEMORY, L_MAX = 30, 80, 8, 4, 6
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def train() -> Interactions:
    rng = np.random.default_rng(0)
    users = np.concatenate([np.arange(N_USERS), rng.integers(0, N_USERS, 400)])
    items = np.concatenate([np.arange(N_ITEMS), rng.integers(0, N_ITEMS, 400 + N_USERS - N_ITEMS)])
    return Interactions.from_ids([f"u{u}" for u in users], [f"i{i}" for i in items],
                                 timestamps=rng.integers(0, 10_000, len(users)))


def make_model(kind: str, seed: int = 0, memory_scale: float = 1.0):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(kind=kind, dim=DIM, n_memory=N_MEMORY, l_max=L_MAX),
                        N_USERS, N_ITEMS)
    if model.lram is not None:
        with torch.no_grad():
            model.lram.keys.mul_(memory_scale)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, train: Interactions):
    """kind -> (model, version dir), one export per kind for the whole module."""
    out = {}
    for kind in KINDS:
        model = make_model(kind)
        root = tmp_path_factory.mktemp(kind.replace("+", "p"))
        out[kind] = (model, exporter.export(model, train, root, metrics={"ndcg@10": 0.25}))
    return out


def feed(model, rng: np.random.Generator, batch: int = 9, n_cand: int = 50) -> dict:
    """Trained and random users, history lengths 0..L_max, distinct random candidates.

    Candidates are distinct within a row, as the service's are: a repeated item is an exact
    tie that either side may break by one ulp, which says nothing about the scorer.
    """
    n_fresh = min(2, batch - 1)
    users = model.user_emb.weight.detach().numpy()[rng.choice(N_USERS, batch - n_fresh)]
    fresh = rng.standard_normal((n_fresh, DIM)).astype(np.float32) * 0.3
    lengths = np.resize(np.arange(L_MAX, -1, -1), batch)
    cands = np.stack([rng.choice(N_ITEMS, n_cand, replace=False) for _ in range(batch)])
    return {"user_vecs": np.concatenate([users, fresh]).astype(np.float32),
            "hist_rows": rng.integers(0, N_ITEMS, (batch, L_MAX)),
            "hist_mask": (np.arange(L_MAX) < lengths[:, None]).astype(np.float32),
            "cand_rows": cands.astype(np.int64)}


def session(vdir: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(vdir / art.SCORER), providers=["CPUExecutionProvider"])


def assert_parity(model, sess: ort.InferenceSession, inputs: dict) -> None:
    got = sess.run(None, inputs)
    want, want_attn = exporter.reference_outputs(model, inputs)
    np.testing.assert_allclose(got[0], want, rtol=exporter.PARITY_RTOL,
                               atol=exporter.PARITY_ATOL)
    k = min(10, want.shape[1])
    np.testing.assert_array_equal(np.argsort(got[0], 1, kind="stable")[:, :k],
                                  np.argsort(want, 1, kind="stable")[:, :k])
    if want_attn is None:
        assert len(got) == 1
    else:
        assert got[1].shape == want_attn.shape
        np.testing.assert_allclose(got[1], want_attn, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("batch", "n_cand"), [(9, 50), (1, 1), (3, N_ITEMS)])
def test_onnx_matches_torch(exported, kind: str, batch: int, n_cand: int) -> None:
    model, vdir = exported[kind]
    assert_parity(model, session(vdir), feed(model, np.random.default_rng(batch), batch, n_cand))


@pytest.mark.parametrize("kind", ["hlr", "hlr++"])
def test_exact_max_shift_for_large_keys(tmp_path: Path, train: Interactions, kind: str) -> None:
    """Keys too large for HLR's bound shift get the exact per-row max, still at parity."""
    model = make_model(kind, seed=1, memory_scale=300.0)
    assert build_scorer_graph(model).shift_mode == "max"
    vdir = exporter.export(model, train, tmp_path)
    assert art.read_manifest(vdir).onnx.graph["softmax_shift"] == "max"
    assert_parity(model, session(vdir), feed(model, np.random.default_rng(3)))


@pytest.mark.parametrize("kind", KINDS)
def test_pad_rows_do_not_matter(exported, kind: str) -> None:
    """Whatever sits under mask 0 (a valid row, a negative or huge id) scores the same."""
    model, vdir = exported[kind]
    sess = session(vdir)
    inputs = feed(model, np.random.default_rng(7))
    base = sess.run(None, inputs)
    pads = inputs["hist_mask"] == 0
    for junk in (0, N_ITEMS - 1, -5, 10**12):
        other = dict(inputs, hist_rows=np.where(pads, junk, inputs["hist_rows"]))
        for a, b in zip(base, sess.run(None, other), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_out_of_range_candidates_never_rank(exported, kind: str) -> None:
    model, vdir = exported[kind]
    sess = session(vdir)
    inputs = feed(model, np.random.default_rng(8), batch=2, n_cand=5)
    base = sess.run(None, inputs)[0]
    bad = inputs["cand_rows"].copy()
    bad[:, 1], bad[:, 3] = -1, N_ITEMS
    got = sess.run(None, dict(inputs, cand_rows=bad))[0]
    assert np.isinf(got[:, [1, 3]]).all()
    np.testing.assert_array_equal(got[:, [0, 2, 4]], base[:, [0, 2, 4]])


@pytest.mark.parametrize("kind", KINDS)
def test_manifest_and_files(exported, train: Interactions, kind: str) -> None:
    model, vdir = exported[kind]
    manifest = art.read_manifest(vdir)
    art.verify(vdir, manifest)
    assert manifest.format_version == art.FORMAT_VERSION and manifest.version == vdir.name
    assert manifest.kind == kind and manifest.model == model.config.model_dump(mode="json")
    assert (manifest.dim, manifest.l_max) == (DIM, L_MAX)
    assert manifest.n_memory == (0 if kind in ("cml", "adacml") else N_MEMORY)
    assert manifest.counts == art.Counts(users=N_USERS, items=N_ITEMS, interactions=len(train))
    assert manifest.data_fingerprint == train.fingerprint()
    assert manifest.metrics == {"ndcg@10": 0.25} and manifest.relrec_version
    assert manifest.index.factory == "Flat" and manifest.index.recall_at_c == 1.0
    assert list(manifest.onnx.inputs) == list(INPUTS)
    assert manifest.has_attention == (kind in ("hlr", "hlr++"))
    assert set(manifest.files) == {*art.PAYLOAD_FILES, *art.ID_MAP_FILES}
    sess = session(vdir)
    assert [i.name for i in sess.get_inputs()] == list(INPUTS)
    assert [o.name for o in sess.get_outputs()] == list(manifest.onnx.outputs)
    assert sess.get_inputs()[1].shape == ["B", L_MAX]


@pytest.mark.parametrize("kind", KINDS)
def test_arrays_hold_the_graph_values(exported, train: Interactions, kind: str) -> None:
    """tensors.npz and the graph's item table are the model's values, bit for bit."""
    model, vdir = exported[kind]
    arrays = read_arrays(vdir)
    np.testing.assert_array_equal(arrays.items, model.item_emb.weight.detach().numpy())
    np.testing.assert_array_equal(arrays.users, model.user_emb.weight.detach().numpy())
    if model.lram is not None:
        np.testing.assert_array_equal(arrays.keys, model.lram.keys.detach().numpy())
        np.testing.assert_array_equal(arrays.memories, model.lram.memories.detach().numpy())
    else:
        assert arrays.keys.shape == (DIM, 0) and arrays.memories.shape == (0, DIM)
    proto = onnx.load(str(vdir / art.SCORER), load_external_data=False)
    (table,) = [i for i in proto.graph.initializer if i.name == "items"]
    # the graph's table is tensors.npz's own bytes (ONNX external data), not a copy
    assert table.data_location == onnx.TensorProto.EXTERNAL
    assert {e.key: e.value for e in table.external_data}["location"] == art.TENSORS
    assert art.read_manifest(vdir).onnx.graph["external_data"] == {"items": art.TENSORS}
    inits = {i.name: numpy_helper.to_array(i)
             for i in onnx.load(str(vdir / art.SCORER)).graph.initializer}
    np.testing.assert_array_equal(inits["items"], arrays.items)
    assert arrays.user_ids.to_list() == train.users.to_list()
    assert arrays.item_ids.to_list() == train.items.to_list()
    assert arrays.user_ids.is_mapped and arrays.item_ids.is_mapped  # shared by workers
    np.testing.assert_array_equal(arrays.popularity, train.item_popularity())
    index = faiss.read_index(str(vdir / art.INDEX))
    assert index.ntotal == N_ITEMS
    _, nearest = index.search(arrays.items[:3], 1)
    assert nearest[:, 0].tolist() == [0, 1, 2]


def test_history_is_distinct_and_newest_first() -> None:
    inter = Interactions.from_ids(["a", "a", "b", "a", "a", "b"], ["x", "y", "x", "z", "x", "y"],
                                  timestamps=[5, 9, 1, 7, 3, 1])
    indptr, items = exporter.history_csr(inter)
    ids = inter.items.ids
    assert indptr.tolist() == [0, 3, 5]
    assert ids[items[:3]].tolist() == ["y", "z", "x"]  # x's newest stamp is 5
    assert ids[items[3:]].tolist() == ["y", "x"]  # a tie: the later log line is newer
    no_time = Interactions(inter.user_rows, inter.item_rows, inter.weights, None, inter.users,
                           inter.items)
    indptr, items = exporter.history_csr(no_time)
    assert ids[items[:3]].tolist() == ["x", "z", "y"]  # log order, newest (last) first


def test_current_points_at_the_newest_export(tmp_path: Path, train: Interactions) -> None:
    first = exporter.export(make_model("hlr"), train, tmp_path)
    second = exporter.export(make_model("hlr", seed=1), train, tmp_path)
    third = exporter.export(make_model("hlr", seed=1), train, tmp_path)  # same model, same second
    assert art.resolve_current(tmp_path) == third.resolve()
    assert sorted(art.list_versions(tmp_path)) == sorted(v.name for v in (first, second, third))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("step", ["write_interactions", "_write_index", "_write_tensors"])
def test_failed_export_publishes_nothing(tmp_path: Path, train: Interactions,
                                         monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    old = exporter.export(make_model("lrml"), train, tmp_path)

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(exporter, step, boom)
    with pytest.raises(RuntimeError, match="disk full"):
        exporter.export(make_model("lrml", seed=1), train, tmp_path)
    assert art.resolve_current(tmp_path) == old.resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([old.name, art.CURRENT])


def test_parity_failure_publishes_nothing(tmp_path: Path, train: Interactions,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def skewed(model, shift="auto"):
        graph = build_scorer_graph(model, shift)
        graph.items.mul_(1.001)  # a scorer that no longer computes the model's distance
        return graph

    monkeypatch.setattr(exporter, "build_scorer_graph", skewed)
    with pytest.raises(exporter.ParityError, match="nothing was published"):
        exporter.export(make_model("hlr"), train, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_hnsw_index(tmp_path: Path, train: Interactions) -> None:
    vdir = exporter.export(make_model("lrml"), train, tmp_path, index="hnsw")
    info = art.read_manifest(vdir).index
    assert info.factory == "HNSW32" and info.params["efConstruction"] == 200
    assert info.params["efSearch"] > 0 and 0.9 <= info.recall_at_c <= 1.0
    assert faiss.read_index(str(vdir / art.INDEX)).ntotal == N_ITEMS


def test_run_roundtrip_and_export_run(tmp_path: Path, train: Interactions) -> None:
    model = make_model("hlr++")
    save_run(tmp_path / "run", Run(train, {"k": 10}, {"algorithm": "hlr++"}, model=model))
    run = load_run(tmp_path / "run")
    assert run.metrics == {"k": 10} and run.config == {"algorithm": "hlr++"}
    assert run.train.fingerprint() == train.fingerprint()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(run.model.state_dict()[name], value, rtol=0, atol=0)
    vdir = exporter.export_run(tmp_path / "run", tmp_path / "artifacts")
    manifest = art.read_manifest(vdir)
    assert manifest.config == {"algorithm": "hlr++"} and manifest.kind == "hlr++"
    assert_parity(model, session(vdir), feed(model, np.random.default_rng(4)))


def test_bench_scorer_quick() -> None:
    """bench/scorer.py runs end to end (few calls; no timing is asserted)."""
    done = subprocess.run([sys.executable, "bench/scorer.py", "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| hlr |" in done.stdout
