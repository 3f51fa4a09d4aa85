"""Baselines served like the relational models (issue 16): pop and ALS runs export to the same
artifact format, `scorer.onnx` matches numpy, and the unchanged service serves them: trained
users get the model's own top k, history-only users ALS's closed-form fold-in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from models import artifact as art
from models.artifact_arrays import read_arrays, user_history
from service.app import create_app
from tests.service.conftest import make_settings
from training.baseline_export import L_MAX, check_dot_parity
from training.exporter import ParityError, export_run


@pytest.fixture(scope="module", params=["pop", "als"])
def baseline_artifact(request: pytest.FixtureRequest, planted_split: object,
                      tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    from training.config import load_config
    from training.pipeline import run

    kind = request.param
    cfg = load_config(algorithm=kind, data={"path": "planted", "k_core": 5},
                      # α 0 (confidence 1): the parity bound below was set on those factors
                      baseline={"factors": 16, "iterations": 5, "regularization": 1.0,
                                "alpha": 0.0},
                      eval={"sampled": False})
    out = tmp_path_factory.mktemp(kind)
    run(cfg, out / "run", split=planted_split)  # type: ignore[arg-type]
    export_run(out / "run", out / "artifacts")
    return kind, out / "artifacts"


def _tensors(vdir: Path) -> dict[str, np.ndarray]:
    with np.load(vdir / art.TENSORS) as npz:
        return {n: npz[n] for n in npz.files}


def test_the_artifact_declares_what_the_service_needs(
    baseline_artifact: tuple[str, Path],
) -> None:
    kind, root = baseline_artifact
    vdir, manifest = art.open_version(root)
    assert manifest.kind == kind and manifest.n_memory == 0 and manifest.l_max == L_MAX
    assert manifest.index.metric == "IP"
    assert manifest.fold_in is not None
    assert manifest.fold_in.method == ("least_squares" if kind == "als" else "constant")
    if kind == "als":  # the confidence ALS was fitted with (Hu et al.: 1 + α)
        config = manifest.config or {}
        assert manifest.fold_in.params["confidence"] == 1.0 + config["baseline"]["alpha"]
    assert not manifest.has_attention


def test_onnx_matches_numpy_dot_products(baseline_artifact: tuple[str, Path]) -> None:
    """Reference parity as for the relational scorers: ORT vs −x·y at rtol 1e-5."""
    _, root = baseline_artifact
    vdir = art.resolve_current(root)
    t = _tensors(vdir)
    assert check_dot_parity(t, vdir / art.SCORER, seed=3) < 1e-5
    session = ort.InferenceSession(str(vdir / art.SCORER), providers=["CPUExecutionProvider"])
    users = t["users"][:5]
    cand = np.tile(np.arange(len(t["items"]), dtype=np.int64), (5, 1))
    (dist,) = session.run(["distances"], {
        "user_vecs": users, "hist_rows": np.zeros((5, L_MAX), np.int64),
        "hist_mask": np.zeros((5, L_MAX), np.float32), "cand_rows": cand})
    np.testing.assert_allclose(dist, -(users @ t["items"].T), rtol=1e-5, atol=1e-6)
    top_onnx = np.argsort(dist, axis=1, kind="stable")[:, :10]
    top_np = np.argsort(-(users @ t["items"].T), axis=1, kind="stable")[:, :10]
    assert np.array_equal(top_onnx, top_np)


def test_parity_check_catches_a_wrong_graph(baseline_artifact: tuple[str, Path]) -> None:
    _, root = baseline_artifact
    vdir = art.resolve_current(root)
    t = _tensors(vdir)
    t["items"] = t["items"] * 1.01 + 0.01
    with pytest.raises(ParityError):
        check_dot_parity(t, vdir / art.SCORER)


def test_the_service_serves_the_models_own_ranking(
    baseline_artifact: tuple[str, Path], tmp_path: Path
) -> None:
    kind, root = baseline_artifact
    vdir = art.resolve_current(root)
    arrays = read_arrays(vdir)
    t = _tensors(vdir)
    with TestClient(create_app(make_settings(root, f"sqlite:///{tmp_path / 'h.db'}"))) as c:
        for row in range(0, len(arrays.user_ids), 40):
            body = c.get(f"/recommend/{arrays.user_ids.ids[row]}", params={"k": 10}).json()
            assert body["source"] == "personalized"
            scores = t["users"][row] @ t["items"].T
            seen = user_history(arrays, row)
            scores[seen] = -np.inf
            want = np.argsort(-scores, kind="stable")[:10]
            got = [arrays.item_ids.row(x["item_id"]) for x in body["items"]]
            assert np.allclose(scores[got], scores[want], rtol=1e-5)  # ties may swap
            assert not set(got) & set(seen.tolist())


def test_history_only_users_get_the_declared_fold_in(
    baseline_artifact: tuple[str, Path], tmp_path: Path
) -> None:
    kind, root = baseline_artifact
    vdir = art.resolve_current(root)
    arrays = read_arrays(vdir)
    t = _tensors(vdir)
    posted = arrays.item_ids.ids[[3, 10, 17, 40]].tolist()
    with TestClient(create_app(make_settings(root, f"sqlite:///{tmp_path / 'h.db'}"))) as c:
        c.post("/interactions",
               json={"interactions": [{"user_id": "fresh", "item_id": i} for i in posted]})
        body = c.get("/recommend/fresh", params={"k": 10}).json()
    assert body["source"] == "history"
    got = [arrays.item_ids.row(x["item_id"]) for x in body["items"]]
    assert not set(got) & {3, 10, 17, 40}
    if kind == "pop":
        order = [r for r in np.argsort(-arrays.popularity, kind="stable")
                 if r not in (3, 10, 17, 40)]
        assert np.array_equal(arrays.popularity[got], arrays.popularity[order[:10]])
    else:
        from implicit.cpu.als import AlternatingLeastSquares
        from scipy.sparse import csr_matrix

        manifest = art.read_manifest(vdir)
        als = AlternatingLeastSquares(factors=t["items"].shape[1],
                                      regularization=manifest.model["regularization"],
                                      alpha=manifest.model["confidence"])
        als.user_factors = t["users"]
        als.item_factors = t["items"]
        hist = csr_matrix((np.ones(4, np.float32), ([0] * 4, [3, 10, 17, 40])),
                          shape=(1, len(t["items"])))
        ids, _ = als.recommend(0, hist, N=10, recalculate_user=True)
        assert got == ids.tolist()
