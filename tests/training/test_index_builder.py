"""The index chosen at export by a memory budget (training/index_builder.py, issue 21): the
choice rule, the compressed IVF-PQ index with the exact re-rank unchanged, nprobe chosen by
measured recall@10 against exhaustive exact scoring, and what the manifest records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models import artifact as art
from models.config import ModelConfig
from models.registry import build_model
from service.loader import load_artifact
from training import exporter
from training.cli import main
from training.index_builder import (
    FLAT_MAX_ITEMS,
    REFINE_K_FACTOR,
    IndexChoiceError,
    choose_index,
    estimate_bytes,
)
from training.interactions import Interactions
from training.run_dir import Run, save_run

DIM, N_USERS, N_ITEMS, N_CLUSTERS = 16, 300, 6000, 60


def test_auto_without_budget_keeps_the_earlier_rule() -> None:
    assert choose_index("auto", FLAT_MAX_ITEMS, 100, None).kind == "flat"
    assert choose_index("auto", FLAT_MAX_ITEMS + 1, 100, None).kind == "hnsw"


def test_auto_takes_the_first_kind_that_fits_the_budget() -> None:
    n, d = 1_000_000, 100
    hnsw_mb = estimate_bytes("hnsw", n, d) / 2**20
    assert choose_index("auto", n, d, hnsw_mb + 1).kind == "hnsw"
    chosen = choose_index("auto", n, d, hnsw_mb / 4)
    assert chosen.kind == "ivfpq" and "hnsw needs" in chosen.reason
    assert chosen.estimate_bytes <= hnsw_mb / 4 * 2**20
    assert d % chosen.m == 0 and chosen.m == 50  # the most bytes a vector that fit
    tight = choose_index("auto", n, d, 20)
    assert tight.kind == "ivfpq" and tight.m < chosen.m and tight.estimate_bytes <= 20 * 2**20
    small = choose_index("auto", 10_000, d, 100)
    assert small.kind == "flat"


def test_fast_scan_is_built_only_when_asked_for_and_estimated_at_half_the_codes() -> None:
    n, d = 1_000_000, 100
    fs = choose_index("ivfpqfs", n, d, None)
    pq = choose_index("ivfpq", n, d, None)
    assert (fs.kind, fs.nbits, fs.m) == ("ivfpqfs", 4, pq.m)
    assert fs.estimate_bytes < pq.estimate_bytes  # m/2 bytes of codes a vector, not m
    assert fs.estimate_bytes == pytest.approx(((pq.m + 1) // 2 + 8) * n, rel=0.03)
    tight = estimate_bytes("ivfpq", n, d, 2, 1024) / 2**20  # even the smallest 8-bit fits
    assert choose_index("auto", n, d, tight).kind == "ivfpq"
    with pytest.raises(IndexChoiceError, match="ivfpqfs needs at least"):
        choose_index("ivfpqfs", 500, d, None)


def test_no_fitting_index_says_what_would() -> None:
    with pytest.raises(IndexChoiceError, match="raise --index-memory-mb"):
        choose_index("auto", 10_000_000, 100, 10)
    with pytest.raises(IndexChoiceError, match="hnsw index over 1000000 items needs"):
        choose_index("hnsw", 1_000_000, 100, 100)
    with pytest.raises(IndexChoiceError, match="at least"):
        choose_index("ivfpq", 500, 100, None)
    with pytest.raises(IndexChoiceError, match="index must be one of"):
        choose_index("lsh", 500, 100, None)


@pytest.fixture(scope="module")
def planted() -> tuple[torch.nn.Module, Interactions]:
    """A CML whose items sit in clusters and whose users sit at their cluster's centre, with
    histories drawn from it: an IVF list holds a cluster, so nprobe matters and recall is
    meaningful."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((N_CLUSTERS, DIM)).astype(np.float32)
    centres *= 0.8 / np.linalg.norm(centres, axis=1, keepdims=True)
    item_cluster = rng.integers(0, N_CLUSTERS, N_ITEMS)
    items = centres[item_cluster] + 0.08 * rng.standard_normal((N_ITEMS, DIM))
    user_cluster = rng.integers(0, N_CLUSTERS, N_USERS)
    users = centres[user_cluster] + 0.05 * rng.standard_normal((N_USERS, DIM))
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="cml", dim=DIM, l_max=8), N_USERS, N_ITEMS).eval()
    with torch.no_grad():
        model.item_emb.weight.copy_(torch.from_numpy(items.astype(np.float32)))
        model.user_emb.weight.copy_(torch.from_numpy(users.astype(np.float32)))
    by_cluster = [np.flatnonzero(item_cluster == c) for c in range(N_CLUSTERS)]
    u_rows = np.repeat(np.arange(N_USERS), 5)
    i_rows = np.array([rng.choice(by_cluster[user_cluster[u]]) for u in u_rows])
    u_rows = np.concatenate([u_rows, rng.integers(0, N_USERS, N_ITEMS)])
    i_rows = np.concatenate([i_rows, np.arange(N_ITEMS)])  # every item known
    train = Interactions.from_ids([f"u{u}" for u in u_rows], [f"i{i}" for i in i_rows])
    order_u = np.array([int(u[1:]) for u in train.users.to_list()])
    order_i = np.array([int(i[1:]) for i in train.items.to_list()])
    with torch.no_grad():  # rows in the id maps' order
        model.user_emb.weight.copy_(torch.from_numpy(users[order_u].astype(np.float32)))
        model.item_emb.weight.copy_(torch.from_numpy(items[order_i].astype(np.float32)))
    return model, train


def test_ivfpq_export_records_the_choice_and_its_recall(tmp_path: Path, planted) -> None:
    model, train = planted
    budget = estimate_bytes("flat", N_ITEMS, DIM) / 2 / 2**20  # flat (and hnsw) do not fit
    vdir = exporter.export(model, train, tmp_path, index_memory_mb=budget)
    manifest = art.read_manifest(vdir)
    index = manifest.index
    assert index.factory.startswith("IVF") and ",PQ" in index.factory
    params = index.params
    assert params["budget_mb"] == budget and params["estimate_bytes"] <= budget * 2**20
    assert params["chosen"].startswith("auto: hnsw needs")
    assert params["train_sample"] <= N_ITEMS and params["nlist"] > 1
    assert (vdir / art.INDEX).stat().st_size <= budget * 2**20
    retrieval = manifest.retrieval
    assert retrieval is not None and retrieval.ef_search is None
    assert retrieval.nprobe is not None and 1 <= retrieval.nprobe <= params["nlist"]
    assert retrieval.met and retrieval.recall >= retrieval.target_recall
    assert {p.nprobe for p in retrieval.curve} > {retrieval.nprobe}  # nprobe was measured
    raw = json.loads((vdir / art.MANIFEST).read_text())
    assert raw["retrieval"]["nprobe"] == retrieval.nprobe
    # the service probes the lists the export chose
    loaded = load_artifact(vdir)
    import faiss

    assert faiss.extract_index_ivf(loaded.index).nprobe == retrieval.nprobe


@pytest.mark.parametrize(("kind", "suffix"), [("ivfpq", ""), ("ivfpqfs", "fs")])
def test_ivfpq_candidates_are_reranked_exactly(tmp_path: Path, planted, kind: str,
                                               suffix: str) -> None:
    """IVF-PQ (8-bit codes, or 4-bit fast scan) proposes, the scorer orders: the served top 10
    is the exact top 10 for the sampled users at the chosen C and nprobe (recall 1 on planted
    clusters)."""
    from service.retriever import Retriever
    from training.candidates import exact_distances, recall_at, sample_users

    model, train = planted
    vdir = exporter.export(model, train, tmp_path, index=kind)
    loaded = load_artifact(vdir)
    manifest = loaded.manifest
    nbits = manifest.index.params["nbits"]  # fewer than 8 where the sample is small
    assert manifest.index.factory.endswith(f"x{nbits}{suffix}") and (nbits == 4 or not suffix)
    assert manifest.retrieval is not None and manifest.retrieval.nprobe is not None
    users = sample_users(loaded.arrays, manifest.l_max, 100, seed=1)
    exact = exact_distances(loaded.session, users, loaded.n_items)
    retriever = Retriever(loaded.index, loaded.arrays.items, loaded.arrays.keys,
                          loaded.arrays.memories, loaded.n_candidates)
    assert recall_at(retriever, users, exact, loaded.n_candidates) >= 0.99
    # with one list probed and C = 10 the compressed index alone falls short
    import faiss

    faiss.extract_index_ivf(loaded.index).nprobe = 1
    assert recall_at(retriever, users, exact, 10) < 0.99


def test_cli_index_flags(tmp_path: Path, planted, capsys: pytest.CaptureFixture[str]) -> None:
    model, train = planted
    save_run(tmp_path / "run", Run(train, {}, {"algorithm": "cml"}, model=model))
    out = tmp_path / "artifacts"
    assert main(["export", str(tmp_path / "run"), "--out", str(out), "--index",
                 "ivfpq"]) == 0
    assert art.read_manifest(art.resolve_current(out)).index.factory.startswith("IVF")
    assert main(["export", str(tmp_path / "run"), "--out", str(out),
                 "--index-memory-mb", "0.01"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "raise --index-memory-mb" in err[0]
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path / "run"), "--out", str(out), "--index", "lsh"])


def test_flat_manifest_stays_readable_by_the_previous_relrec(tmp_path: Path, planted) -> None:
    """No `nprobe` key unless there is one: the retrieval record of a Flat (or HNSW) version
    is what a relrec from before issue 21 validates (its models forbid unknown keys)."""
    model, train = planted
    vdir = exporter.export(model, train, tmp_path, index="flat")
    raw = json.loads((vdir / art.MANIFEST).read_text())
    assert raw["index"]["factory"] == "Flat"
    assert "nprobe" not in raw["retrieval"]
    assert all("nprobe" not in point for point in raw["retrieval"]["curve"])
    assert art.read_manifest(vdir).retrieval.nprobe is None


# -- pqfs: a refined fast scan of every item (issue 18) ---------------------------------------


def test_pqfs_keeps_the_vectors_and_codes_two_dims_each() -> None:
    n, d = 100_000, 100
    chosen = choose_index("pqfs", n, d, None)
    assert (chosen.kind, chosen.m, chosen.nbits) == ("pqfs", 50, 4)
    # the float vectors (for the exact re-order) plus half a byte a code
    assert chosen.estimate_bytes == pytest.approx((4 * d + 25) * n, rel=0.01)
    assert choose_index("auto", n, d, None).kind == "hnsw"  # auto builds it only on a miss
    with pytest.raises(IndexChoiceError, match="pqfs index over 100000 items needs"):
        choose_index("pqfs", n, d, 10)
    with pytest.raises(IndexChoiceError, match="pqfs needs at least"):
        choose_index("pqfs", 500, d, None)


def test_pqfs_export_measures_k_factor_and_the_service_sets_it(tmp_path: Path, planted) -> None:
    """The index file keeps the k_factor it was built with (written before the choice): the
    service must set the export's measured choice, as it sets nprobe."""
    import faiss

    from service.retriever import Retriever
    from training.candidates import exact_distances, recall_at, sample_users

    model, train = planted
    vdir = exporter.export(model, train, tmp_path, index="pqfs")
    manifest = art.read_manifest(vdir)
    assert manifest.index.factory == f"PQ{DIM // 2}x4fs,RFlat"
    retrieval = manifest.retrieval
    assert retrieval is not None and retrieval.k_factor is not None
    assert retrieval.ef_search is None and retrieval.nprobe is None
    assert {p.k_factor for p in retrieval.curve} > {retrieval.k_factor}  # it was measured
    raw = json.loads((vdir / art.MANIFEST).read_text())
    assert raw["retrieval"]["k_factor"] == retrieval.k_factor and "nprobe" not in raw["retrieval"]
    assert faiss.read_index(str(vdir / art.INDEX)).k_factor == REFINE_K_FACTOR  # as built
    loaded = load_artifact(vdir)
    assert faiss.downcast_index(loaded.index).k_factor == retrieval.k_factor
    users = sample_users(loaded.arrays, manifest.l_max, 100, seed=1)
    exact = exact_distances(loaded.session, users, loaded.n_items)
    retriever = Retriever(loaded.index, loaded.arrays.items, loaded.arrays.keys,
                          loaded.arrays.memories, loaded.n_candidates)
    assert recall_at(retriever, users, exact, loaded.n_candidates) >= 0.99


def test_pqfs_allow_lists_are_searched_exactly(tmp_path: Path, planted) -> None:
    """A long allow-list goes through an id selector, which FAISS's fast scan refuses: it is
    searched in the refined index's exact part, so the answer is Flat's, not the whole list."""
    import faiss

    from service.retriever import Retriever

    model, train = planted
    loaded = load_artifact(exporter.export(model, train, tmp_path, index="pqfs"))
    arrays = loaded.arrays
    flat = faiss.IndexFlatL2(DIM)
    flat.add(np.ascontiguousarray(arrays.items, dtype=np.float32))
    rng = np.random.default_rng(3)
    users = np.ascontiguousarray(arrays.users[:20], dtype=np.float32)
    hists = [rng.choice(N_ITEMS, 4, replace=False) for _ in range(20)]
    allows = [np.sort(rng.choice(N_ITEMS, 1000, replace=False)) for _ in range(20)]
    found = [Retriever(index, arrays.items, arrays.keys, arrays.memories, 20)
             .candidates_among(users, hists, allows) for index in (loaded.index, flat)]
    for refined, exact, allow in zip(*found, allows, strict=True):
        assert len(refined) == 20 and np.isin(refined, allow).all()
        np.testing.assert_array_equal(refined, exact)


def test_auto_builds_pqfs_where_hnsw_caps_recall(tmp_path: Path, planted) -> None:
    """`auto`'s second try, given an HNSW measurement that missed the target: the refined
    fast scan is measured, written over the index file and recorded with why; a budget it
    does not fit keeps HNSW."""
    import faiss

    model, train = planted
    vdir = exporter.export(model, train, tmp_path, index="hnsw")
    manifest = art.read_manifest(vdir)
    missed = manifest.retrieval.model_copy(update={"recall": 0.5, "met": False})
    tensors = {"items": read_items(vdir), "users": model.user_emb.weight.detach().numpy(),
               "memories": np.zeros((0, DIM), np.float32)}
    info, retrieval = exporter._refine_instead(vdir, tensors, None, manifest.index, missed,
                                               manifest.l_max)
    assert info.factory.endswith("x4fs,RFlat") and "HNSW capped recall@10 at 0.5000" in \
        info.params["chosen"]
    assert retrieval.k_factor is not None and retrieval.recall > 0.5
    assert isinstance(faiss.read_index(str(vdir / art.INDEX)), faiss.IndexRefine)
    kept = exporter._refine_instead(vdir, tensors, 0.01, manifest.index, missed, manifest.l_max)
    assert kept == (manifest.index, missed)


def read_items(vdir: Path) -> np.ndarray:
    from models.artifact_arrays import read_arrays

    return np.ascontiguousarray(read_arrays(vdir).items, dtype=np.float32)
