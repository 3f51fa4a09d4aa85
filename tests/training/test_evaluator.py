"""Evaluation protocols on a hand-made split with oracle, reversed and recording scorers."""

from __future__ import annotations

import numpy as np
import pytest

from models.idmap import IdMap
from training.evaluator import (
    EvalReport,
    format_metrics,
    full_ranking,
    sampled,
    table,
    top_k,
    write_top_k,
)
from training.interactions import Interactions
from training.splits import Split

N_USERS, N_ITEMS = 4, 8
USERS = IdMap.from_ids(f"u{i}" for i in range(N_USERS))
ITEMS = IdMap.from_ids(f"i{i}" for i in range(N_ITEMS))

# user: train        valid   test
#  u0   {0, 1}       {2}     {3, 4}
#  u1   {2, 3}       {4}     {5}
#  u2   {4, 5}       {}      {6}
#  u3   {6, 7}       {}      {}      <- no test item: never evaluated
TRAIN = [(0, 0), (0, 1), (1, 2), (1, 3), (2, 4), (2, 5), (3, 6), (3, 7)]
VALID = [(0, 2), (1, 4)]
TEST = [(0, 3), (0, 4), (1, 5), (2, 6)]


def _log(pairs: list[tuple[int, int]]) -> Interactions:
    arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return Interactions(arr[:, 0], arr[:, 1], np.ones(len(arr), np.float32), None, USERS, ITEMS)


def _dense(pairs: list[tuple[int, int]]) -> np.ndarray:
    m = np.zeros((N_USERS, N_ITEMS))
    for u, i in pairs:
        m[u, i] = 1.0
    return m


SPLIT = Split(train=_log(TRAIN), valid=_log(VALID), test=_log(TEST), kind="hand-made", seed=0)


class TableScorer:
    """Scores read from a dense [U, V] table; records every candidate block it is asked about."""

    def __init__(self, table_: np.ndarray) -> None:
        self.table = table_
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        return self.table[user_rows]

    def score_items(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        self.calls.append((user_rows.copy(), item_rows.copy()))
        return np.take_along_axis(self.table[user_rows], item_rows, axis=1)


def test_oracle_is_perfect_and_reversed_gets_nothing():
    oracle = full_ranking(TableScorer(_dense(TEST)), SPLIT, k=3, progress=False)
    np.testing.assert_array_equal(oracle.user_rows, [0, 1, 2])  # u3 has no test item
    for name in ("recall", "ndcg", "map", "mrr"):
        np.testing.assert_allclose(oracle.metrics[name], 1.0)
    # precision = |test| / K: u0 has 2 test items, u1 and u2 one each.
    np.testing.assert_allclose(oracle.metrics["precision"], [2 / 3, 1 / 3, 1 / 3])

    # Reversed: test items score -1, every other unknown item 0, and each user has >= 3 of those.
    reversed_ = full_ranking(TableScorer(-_dense(TEST)), SPLIT, k=3, progress=False)
    for values in reversed_.metrics.values():
        np.testing.assert_array_equal(values, 0.0)


def test_train_items_are_excluded():
    # Train items score highest, then test items: after exclusion the test items lead.
    scorer = TableScorer(3 * _dense(TRAIN) + _dense(TEST))
    report = full_ranking(scorer, SPLIT, k=2, progress=False)
    np.testing.assert_allclose(report.metrics["recall"], 1.0)
    np.testing.assert_allclose(report.metrics["ndcg"], 1.0)


def test_validation_items_excluded_at_test_time_only():
    # u0's valid item 2 outranks its two test items; with k = 2 it would take a slot (recall
    # 0.5) unless it is excluded.
    scorer = TableScorer(2 * _dense(VALID) + _dense(TEST))
    report = full_ranking(scorer, SPLIT, k=2, stage="test", progress=False)
    np.testing.assert_allclose(report.metrics["recall"], 1.0)

    # At validation time the test items are not known, so they stay rankable and, scored
    # first, take the single slot (u0: item 3 or 4; u1: item 5) from the valid item.
    scorer = TableScorer(2 * _dense(TEST) + _dense(VALID))
    report = full_ranking(scorer, SPLIT, k=1, stage="valid", progress=False)
    np.testing.assert_array_equal(report.user_rows, [0, 1])
    np.testing.assert_allclose(report.metrics["recall"], [0.0, 0.0])


def test_users_subset_and_median_popularity():
    report = full_ranking(TableScorer(_dense(TEST)), SPLIT, k=1, users=np.array([0, 3]),
                          progress=False)
    np.testing.assert_array_equal(report.user_rows, [0])  # u3 dropped: no test item
    # The oracle's top 1 for u0 is item 3 or 4 (tied); train popularity of both is 1.
    assert report.median_popularity == 1.0


def test_top_k_orders_and_marks_excluded_slots():
    scores = np.array([[0.1, 0.9, -np.inf, 0.5], [-np.inf, -np.inf, -np.inf, 2.0]])
    np.testing.assert_array_equal(top_k(scores, 3), [[1, 3, 0], [3, -1, -1]])
    np.testing.assert_array_equal(top_k(scores, 6)[0], [1, 3, 0, -1, -1, -1])


def test_nan_scores_are_rejected():
    table_ = _dense(TEST)
    table_[0, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        full_ranking(TableScorer(table_), SPLIT, k=2, progress=False)


def test_sampled_oracle_hits_every_pair():
    report = sampled(TableScorer(_dense(TEST)), SPLIT, n_negatives=20, k=1, progress=False)
    np.testing.assert_array_equal(report.user_rows, [0, 0, 1, 2])  # one entry per test pair
    np.testing.assert_allclose(report.metrics["hr"], 1.0)
    np.testing.assert_allclose(report.metrics["ndcg"], 1.0)


def test_sampled_ties_count_against_the_positive():
    report = sampled(TableScorer(np.zeros((N_USERS, N_ITEMS))), SPLIT, n_negatives=5, k=5,
                     progress=False)
    np.testing.assert_allclose(report.metrics["hr"], 0.0)


def test_sampled_negatives_are_never_interacted_items():
    scorer = TableScorer(_dense(TEST))
    sampled(scorer, SPLIT, n_negatives=100, progress=False)
    seen = _dense(TRAIN + VALID + TEST).astype(bool)
    users, cands = (np.concatenate(x) for x in zip(*scorer.calls, strict=True))
    assert cands.shape == (4, 101)
    negatives = cands[:, 1:]
    assert not seen[users[:, None], negatives].any()
    # u0 has seen {0, 1, 2, 3, 4}: its 100 draws can only be 5, 6 or 7.
    assert set(np.unique(negatives[users == 0])) <= {5, 6, 7}


def test_sampled_is_reproducible_for_a_seed():
    def candidates(seed: int) -> np.ndarray:
        scorer = TableScorer(_dense(TEST))
        sampled(scorer, SPLIT, n_negatives=10, seed=seed, progress=False)
        return np.concatenate([c for _, c in scorer.calls])

    np.testing.assert_array_equal(candidates(0), candidates(0))
    assert not np.array_equal(candidates(0), candidates(1))


def test_summary_mean_std_and_ci():
    report = EvalReport("full", 10, "test", {"ndcg": np.array([0.0, 1.0, 0.5, 0.5])},
                        np.arange(4), median_popularity=12.0)
    s = report.summary()
    # mean = 2 / 4 = 0.5; std (ddof 1) = sqrt((0.25 + 0.25 + 0 + 0) / 3) = 0.40825;
    # ci95 = 1.96 * 0.40825 / sqrt(4) = 0.40008
    assert s["ndcg"]["mean"] == pytest.approx(0.5)
    assert s["ndcg"]["std"] == pytest.approx(np.sqrt(1 / 6))
    assert s["ndcg"]["ci95"] == pytest.approx(0.40008, abs=1e-5)
    assert s["ndcg"]["n_users"] == 4
    assert np.isnan(EvalReport("full", 10, "test", {"ndcg": np.ones(1)}, np.arange(1))
                    .summary()["ndcg"]["ci95"])  # one user: no spread
    assert s["median_popularity"] == {"mean": 12.0, "std": None, "ci95": None, "n": 4,
                                      "n_users": 4}
    assert report.means() == {"ndcg": 0.5, "median_popularity": 12.0}


def test_table_renders_one_protocol_and_refuses_to_mix():
    full = full_ranking(TableScorer(_dense(TEST)), SPLIT, k=3, progress=False)
    samp = sampled(TableScorer(_dense(TEST)), SPLIT, n_negatives=5, k=3, progress=False)
    text = full.to_table("oracle")
    assert text.startswith("full ranking, test, @3")
    assert "| model | precision@3 | recall@3 |" in text
    assert "| oracle | 0.4444 ± " in text
    assert "sampled (5 negatives)" in samp.to_table()
    with pytest.raises(ValueError, match="protocols"):
        table([full, samp], ["a", "b"])
    table([full, full], ["a", "b"])  # same protocol: fine


def test_write_top_k_lists_each_users_ranking_in_external_ids(tmp_path):
    """Issue 15 (`--topk-out`): one row per recommended item, best first, raw ids, known items
    never listed, slots past the catalogue left out."""
    scores = np.tile(np.arange(N_ITEMS, 0, -1, dtype=float), (N_USERS, 1))  # i0 best … i7 worst
    report = full_ranking(TableScorer(scores), SPLIT, k=7, progress=False)
    path = write_top_k(report, SPLIT, tmp_path / "top.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "user,item,rank"
    rows = [line.split(",") for line in lines[1:]]
    # u0 knows i0, i1 (train) and i2 (valid): 5 unknown items remain of 8, so 5 rows, not 7
    assert [r for r in rows if r[0] == "u0"] == [["u0", f"i{i}", str(n)]
                                                  for n, i in enumerate(range(3, 8), start=1)]
    assert {r[0] for r in rows} == {"u0", "u1", "u2"}  # u3 has no test item
    with pytest.raises(ValueError, match="full-ranking"):
        write_top_k(sampled(TableScorer(scores), SPLIT, n_negatives=3, progress=False), SPLIT,
                    tmp_path / "x.csv")


def test_format_metrics_prints_the_two_protocols_as_two_tables() -> None:
    """`relrec train`'s output: full ranking with its CIs, then sampled, never one table."""
    names = ("precision", "recall", "ndcg", "map", "mrr")
    doc = {"model": "hlr", "split": "per-user", "k": 5,
           "metrics": {"precision": 0.1, "recall": 0.25, "ndcg": 0.125, "map": 0.0625,
                       "mrr": 0.5, "median_popularity": 42.4},
           "spread": {n: {"ci95": None if n == "mrr" else 0.01} for n in names},
           "sampled": {"hr": 0.75, "ndcg": 0.5, "n_negatives": 100}}
    assert format_metrics(doc).splitlines() == [
        "full ranking @5 (hlr, split per-user)", "",
        "| precision@5 | recall@5 | ndcg@5 | map@5 | mrr@5 | median pop |",
        "|---|---|---|---|---|---|",
        "| 0.1000 ± 0.0100 | 0.2500 ± 0.0100 | 0.1250 ± 0.0100 | 0.0625 ± 0.0100 | 0.5000 | 42 |",
        "", "sampled protocol (100 negatives)", "",
        "| HR@5 | NDCG@5 |", "|---|---|", "| 0.7500 | 0.5000 |"]
    del doc["sampled"]
    assert "sampled" not in format_metrics(doc) and len(format_metrics(doc).splitlines()) == 5
