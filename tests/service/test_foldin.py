"""Fold-in of users known only by their history (issue 16): on planted data, a vector fitted
under the model's hinge ranks the held-out items of users removed before training better than
the mean of their items' vectors; ALS's closed form is `implicit`'s `recalculate_user`; the
manifest picks the method and the setting turns it off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.artifact import FoldInInfo
from service.foldin import (
    ConstantFoldIn,
    HingeFoldIn,
    LeastSquaresFoldIn,
    MeanFoldIn,
    build_fold_in,
)
from service.loader import LoadedArtifact, load_artifact


@pytest.fixture(scope="module")
def cold_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedArtifact, list[np.ndarray]]:
    """An HLR trained without 10% of the users; those users' items (rows of the artifact), in
    a seeded order. About 10 s."""
    import torch

    from training.config import load_config
    from training.exporter import export
    from training.filters import binarize, k_core
    from training.interactions import densify
    from training.pipeline import fit_relational
    from training.splits import per_user
    from training.synthetic import planted_interactions

    torch.manual_seed(0)
    raw = planted_interactions(n_users=800, n_items=600, n_communities=8, items_per_user=30,
                               noise=0.2, popularity_skew=0.7, seed=1)
    inter = k_core(binarize(raw, 4.0), 5)
    rng = np.random.default_rng(0)
    held = rng.choice(inter.n_users, inter.n_users // 10, replace=False)
    mask = np.isin(inter.user_rows, held)
    split = per_user(densify(inter.select(~mask)), seed=0)
    cfg = load_config(
        algorithm="hlr",  # type: ignore[arg-type]
        data={"path": "planted", "k_core": 5},
        model={"dim": 32, "n_memory": 8, "l_max": 20},
        trainer={"epochs": 6, "batch_size": 500, "lr": 0.005, "progress": False,
                 "patience": 6, "select_by": "loss"},
    )
    model, _, _ = fit_relational(cfg, split)
    vdir = export(model, split.train, tmp_path_factory.mktemp("cold"),  # type: ignore[arg-type]
                  parity_check=False)
    art = load_artifact(vdir, ort_threads=1)
    known = art.arrays.item_ids
    histories = []
    for u in held:
        ids = [inter.items.ids[i] for i in inter.item_rows[inter.user_rows == u]]
        rows = np.array([known.get(x) for x in ids if known.get(x) >= 0], np.int64)
        np.random.default_rng(int(u)).shuffle(rows)
        histories.append(rows)
    return art, histories


def _recall(art: LoadedArtifact, fold_in: object, histories: list[np.ndarray], n: int) -> float:
    """Recall@10 on the rest of each history, scored by the served scorer.onnx."""
    l_max, n_items = art.l_max, art.n_items
    out = []
    for h in histories:
        if len(h) <= n:
            continue
        hist, rest = h[:n], h[n:]
        vec = fold_in.vector(hist)  # type: ignore[attr-defined]
        rows = np.zeros((1, l_max), np.int64)
        mask = np.zeros((1, l_max), np.float32)
        rows[0, : min(n, l_max)], mask[0, : min(n, l_max)] = hist[:l_max], 1.0
        (dist,) = art.session.run(["distances"], {
            "user_vecs": vec[None].astype(np.float32), "hist_rows": rows, "hist_mask": mask,
            "cand_rows": np.arange(n_items, dtype=np.int64)[None]})
        dist[0, hist] = np.inf
        top = np.argsort(dist[0], kind="stable")[:10]
        out.append(len(np.intersect1d(top, rest)) / min(len(rest), 10))
    return float(np.mean(out))


def test_hinge_fold_in_beats_the_mean_of_items_on_planted_data(
    cold_setup: tuple[LoadedArtifact, list[np.ndarray]],
) -> None:
    art, histories = cold_setup
    a = art.arrays
    hinge = build_fold_in(art.manifest.fold_in, a, margin=float(art.manifest.model["margin"]))
    assert isinstance(hinge, HingeFoldIn)
    mean = MeanFoldIn(a.items)
    fitted = [_recall(art, hinge, histories, n) for n in (5, 10, 20)]
    baseline = [_recall(art, mean, histories, n) for n in (5, 10, 20)]
    assert np.mean(fitted) > np.mean(baseline) + 0.01, (fitted, baseline)


def test_hinge_fold_in_is_deterministic_and_in_the_unit_ball(
    cold_setup: tuple[LoadedArtifact, list[np.ndarray]],
) -> None:
    art, histories = cold_setup
    a = art.arrays
    f = HingeFoldIn(a.items, a.keys, a.memories, margin=0.5)
    for h in histories[:10]:
        v = f.vector(h[:7])
        assert v.shape == (a.items.shape[1],) and v.dtype == np.float32
        assert np.linalg.norm(v) <= 1.0 + 1e-6
        assert np.array_equal(v, f.vector(h[:7].copy()))


def test_the_setting_turns_the_fold_in_off(
    cold_setup: tuple[LoadedArtifact, list[np.ndarray]],
) -> None:
    art, histories = cold_setup
    off = build_fold_in(art.manifest.fold_in, art.arrays, margin=0.5, enabled=False)
    assert isinstance(off, MeanFoldIn)
    h = histories[0][:5]
    assert np.allclose(off.vector(h), art.arrays.items[h].mean(axis=0) / max(
        1.0, float(np.linalg.norm(art.arrays.items[h].mean(axis=0)))))


def test_least_squares_fold_in_is_implicits_recalculate_user(tmp_path: Path) -> None:
    """The closed form x = (YᵀCY + λI)⁻¹ YᵀC p against implicit's own user recalculation."""
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from training.synthetic import planted_interactions

    inter = planted_interactions(n_users=200, n_items=150, n_communities=4, items_per_user=15,
                                 seed=3)
    csr = inter.to_csr()
    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(factors=16, regularization=2.0, alpha=4.0, iterations=5,
                                      random_state=0, num_threads=1)
        als.fit(csr, show_progress=False)
        y = np.asarray(als.item_factors)
        f = LeastSquaresFoldIn(y, regularization=2.0, confidence=4.0)
        for u in range(5):
            hist = csr[u].indices
            ids, _ = als.recommend(0, csr[u], N=10, recalculate_user=True)
            mine = np.argsort(-(y @ f.vector(hist)))
            mine = mine[~np.isin(mine, hist)][:10]
            assert np.array_equal(ids, mine)
    declared = FoldInInfo(method="least_squares",
                          params={"regularization": 2.0, "confidence": 4.0})

    class _Arrays:
        items = y
        users = np.zeros((1, y.shape[1]), np.float32)

    assert isinstance(build_fold_in(declared, _Arrays(), margin=0.5), LeastSquaresFoldIn)
    const = build_fold_in(FoldInInfo(method="constant"), _Arrays(), margin=0.5)
    assert isinstance(const, ConstantFoldIn)
