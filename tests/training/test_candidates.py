"""C and efSearch chosen per artifact at export (training/candidates.py, issue 18).

A planted HLR whose keys are scaled up (sharp, item-dependent attention) and whose memory rows
are long: the relation moves each user's best items away from p_u, so a probe that ignores it
needs many candidates, and recall genuinely depends on C. The choice recorded in the manifest
is checked against the rule (the smallest C reaching the target, every smaller C short of it)
and against the service's own two-stage path (Retriever + Ranker through onnxruntime).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models import artifact as art
from models.config import ModelConfig
from models.registry import build_model
from service.loader import load_artifact
from service.ranker import Ranker
from service.retriever import Retriever
from training import candidates
from training.exporter import export
from training.interactions import Interactions

N_USERS, N_ITEMS, DIM, N_MEMORY, L_MAX = 80, 600, 8, 4, 6


@pytest.fixture(scope="module")
def train() -> Interactions:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(N_USERS), 8)
    items = rng.integers(0, N_ITEMS, len(users))
    return Interactions.from_ids([f"u{u}" for u in users], [f"i{i}" for i in items],
                                 timestamps=rng.integers(0, 10_000, len(users)))


def planted_hlr(train: Interactions):
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="hlr", dim=DIM, n_memory=N_MEMORY, l_max=L_MAX),
                        train.n_users, train.n_items)
    with torch.no_grad():
        model.lram.keys.mul_(20.0)
        model.lram.memories.mul_(3.0)
    return model.eval()


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory, train: Interactions) -> Path:
    return export(planted_hlr(train), train, tmp_path_factory.mktemp("artifacts"), index="flat")


def test_tie_aware_recall_by_hand() -> None:
    dist = np.array([0.1, 0.5, 0.2, np.inf, 0.2, 0.9], np.float32)  # item 3 seen
    # exact top 2: item 0 (0.1) and a tie at 0.2 (items 2 and 4)
    assert candidates.tie_aware_recall(np.array([0, 4]), dist, k=2) == 1.0
    assert candidates.tie_aware_recall(np.array([0, 2]), dist, k=2) == 1.0
    assert candidates.tie_aware_recall(np.array([1, 0, 5]), dist, k=2) == 0.5
    assert candidates.tie_aware_recall(np.array([1, 5]), dist, k=2) == 0.0
    # only 5 unseen items: k = 10 shrinks to 5, all of them found
    assert candidates.tie_aware_recall(np.array([0, 1, 2, 4, 5]), dist, k=10) == 1.0


def test_the_manifest_records_the_choice_and_the_rule_holds(version: Path) -> None:
    info = art.read_manifest(version).retrieval
    assert info is not None and info.ef_search is None  # a Flat index has nothing to tune
    assert info.met and info.recall >= candidates.TARGET_RECALL == info.target_recall
    assert info.users == N_USERS and info.probes == "relation" and info.k == 10
    at = {p.c: p.recall for p in info.curve}
    assert at[info.n_candidates] == info.recall
    assert all(r < info.target_recall for c, r in at.items() if c < info.n_candidates)


def test_the_recorded_recall_is_what_the_service_computes(version: Path) -> None:
    """The shortcut (re-rank = exact distances of the candidates) against the real path."""
    loaded = load_artifact(version, ort_threads=1)
    a = loaded.arrays
    users = candidates.sample_users(a, L_MAX, N_USERS)
    exact = candidates.exact_distances(loaded.session, users, loaded.n_items)
    retriever = Retriever(loaded.index, a.items, a.keys, a.memories, loaded.n_candidates)
    cands = retriever.candidates(users.vecs, users.hists, users.seen)
    ranked = Ranker(loaded.session, L_MAX, loaded.has_attention).rank(
        users.vecs, users.hist_rows, users.hist_mask, cands, [10] * len(users))
    served = np.mean([candidates.tie_aware_recall(r.rows, exact[b]) for b, r in
                      enumerate(ranked)])
    assert loaded.n_candidates == art.read_manifest(version).retrieval.n_candidates
    assert served == pytest.approx(art.read_manifest(version).retrieval.recall, abs=1e-9)


def test_recall_depends_on_c_and_the_smallest_sufficient_c_is_chosen(
    version: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With the untranslated probe p_u, few candidates miss the relation's best items."""
    loaded = load_artifact(version, ort_threads=1)
    session = ort.InferenceSession(str(version / art.SCORER), providers=["CPUExecutionProvider"])
    with caplog.at_level(logging.INFO, logger="training.candidates"):
        info = candidates.choose_retrieval(session, loaded.index, loaded.arrays, L_MAX,
                                           probes="user")
    at = {p.c: p.recall for p in info.curve}
    assert at[candidates.C_GRID[0]] < 0.9  # the curve is not flat
    assert info.n_candidates > candidates.C_GRID[0] and info.met
    assert all(r < candidates.TARGET_RECALL for c, r in at.items() if c < info.n_candidates)
    previous = max(c for c in at if c < info.n_candidates)
    assert (f"retrieval: C={info.n_candidates}, exact index: the smallest reaching recall@10"
            in caplog.text and f"C={previous} gave {at[previous]:.4f}" in caplog.text)


def test_hnsw_gets_the_smallest_ef_at_the_chosen_c(tmp_path: Path, train: Interactions) -> None:
    vdir = export(planted_hlr(train), train, tmp_path, index="hnsw")
    info = art.read_manifest(vdir).retrieval
    assert info is not None and info.ef_search in candidates.EF_GRID and info.met
    at_c = {p.ef_search: p.recall for p in info.curve if p.c == info.n_candidates}
    assert at_c[info.ef_search] >= info.target_recall
    assert all(r < info.target_recall for ef, r in at_c.items() if ef < info.ef_search)
    assert load_artifact(vdir).ef_search == info.ef_search


def test_unmet_target_keeps_the_largest_c_and_says_so(
    version: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = load_artifact(version, ort_threads=1)
    with caplog.at_level(logging.INFO, logger="training.candidates"):
        info = candidates.choose_retrieval(loaded.session, loaded.index, loaded.arrays, L_MAX,
                                           probes="user", n_users=20, c_grid=(10, 15))
    best = max(p.recall for p in info.curve)
    assert info.users == 20 and not info.met and info.recall == best < info.target_recall
    # the smallest C reaching the best recall measured, not the largest C tried
    assert info.n_candidates == min(p.c for p in info.curve if p.recall == best)
    assert "no C up to 15 reached recall@10 0.995" in caplog.text


def test_pick_by_hand_target_met_and_plateau() -> None:
    """The rule on hand-made recall tables: recall rises with C and with efSearch."""
    met = {10: 0.97, 20: 0.994, 50: 0.996, 100: 0.999}  # at the largest ef (256)
    ef_at_50 = {16: 0.95, 64: 0.993, 128: 0.9961}
    calls: list[tuple[int, int | None]] = []

    def measure(c: int, ef: int | None) -> float:
        calls.append((c, ef))
        return met[c] if ef == 256 else ef_at_50[ef]  # type: ignore[index]

    assert candidates.pick(measure, [10, 20, 50, 100], [16, 64, 128, 256], 0.995) == (
        50, 128, 0.9961)
    assert (100, 256) not in calls  # C stops at the first that reaches the target
    # An index that caps recall at 0.92 from C = 25: C = 25, not the largest C; the efSearch
    # that reaches the plateau, not the target it cannot reach.
    plateau = {10: 0.84, 25: 0.92, 100: 0.92, 2000: 0.92}
    ef_at_25 = {16: 0.35, 1024: 0.91}

    def capped(c: int, ef: int | None) -> float:
        return plateau[c] if ef == 2048 else ef_at_25[ef]  # type: ignore[index]

    assert candidates.pick(capped, [10, 25, 100, 2000], [16, 1024, 2048], 0.995) == (
        25, 2048, 0.92)
    assert candidates.pick(lambda c, ef: 1.0, [10, 20], [None], 0.995) == (10, None, 1.0)


def test_export_can_skip_the_choice(tmp_path: Path, train: Interactions) -> None:
    vdir = export(planted_hlr(train), train, tmp_path, index="flat", choose_retrieval=False)
    assert art.read_manifest(vdir).retrieval is None
    assert load_artifact(vdir).n_candidates == 200  # the service's fallback
