"""Evaluation protocols: the stage between training and export.

Reads a :class:`Scorer` (a trained model or a baseline) and a split (anything with `train`,
`valid`, `test` :class:`~training.interactions.Interactions` over shared id maps, such as
`training.splits.Split`); writes an :class:`EvalReport` of per-user metric arrays that
summarises to means with their spread. Two protocols (DESIGN §2):

- :func:`full_ranking`: every item is scored and the user's known items are excluded; the
  protocol that model selection and the reported figures use;
- :func:`sampled`: the held-out item ranked among sampled non-interacted items (LRML/NCF),
  only for comparison with the LRML paper. Sampled metrics disagree with full ranking (Krichene
  and Rendle, KDD 2020), so :func:`table` refuses to put the two in one table.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from scipy import sparse
from tqdm.auto import tqdm

from training.interactions import Interactions
from training.metrics import (
    hit_rate_at_k,
    hits_at_k,
    map_at_k,
    median_popularity,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from training.sampler import NegativeSampler

__all__ = ["EvalReport", "Scorer", "SplitLike", "format_metrics", "full_ranking", "sampled",
           "table", "top_k", "write_top_k"]

Stage = Literal["test", "valid"]
_Z95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores items for users; higher is better (negate distances)."""

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        """Scores of every item for each user: [B] -> [B, n_items]."""
        ...

    def score_items(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        """Scores of given candidates: user_rows [B], item_rows [B, C] -> [B, C]."""
        ...


class SplitLike(Protocol):
    """What the evaluator needs of `training.splits.Split`: three logs over shared id maps."""

    @property
    def train(self) -> Interactions: ...

    @property
    def valid(self) -> Interactions: ...

    @property
    def test(self) -> Interactions: ...


@dataclass(frozen=True)
class EvalReport:
    """Per-user metric arrays of one protocol, stage and K.

    `metrics[name]` has one entry per evaluated user (full ranking) or per test pair (sampled;
    `user_rows` says whose). Names carry no "@k" (`ndcg`, not `ndcg@10`): K is `self.k`, and
    the protocol is `self.protocol`, which is what keeps sampled and full numbers apart.
    Full ranking: precision, recall, ndcg, map, mrr; sampled: hr, ndcg. `median_popularity`
    (full ranking only) is one number for the whole report, not a mean over users.
    """

    protocol: Literal["full", "sampled"]
    k: int
    stage: str
    metrics: dict[str, np.ndarray]
    user_rows: np.ndarray  # [n] int64
    median_popularity: float | None = None  # full ranking only
    n_negatives: int | None = None  # sampled protocol only
    top: np.ndarray | None = None  # full ranking: [n, k] item rows, best first, -1 = none

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        """Mean, std (ddof 1) and 95% CI half-width 1.96·std/√n (normal approximation) per metric.

        `n` counts the entries the mean is over, `n_users` the distinct users; std and ci95
        are NaN when n < 2. `median_popularity` has no spread over users: its `std` and `ci95`
        are None.
        """
        n_users = len(np.unique(self.user_rows))
        out: dict[str, dict[str, float | int | None]] = {}
        for name, values in self.metrics.items():
            n = len(values)
            std = float(np.std(values, ddof=1)) if n > 1 else float("nan")
            out[name] = {"mean": float(np.mean(values)), "std": std,
                         "ci95": _Z95 * std / np.sqrt(n), "n": n, "n_users": n_users}
        if self.median_popularity is not None:
            out["median_popularity"] = {"mean": self.median_popularity, "std": None,
                                        "ci95": None, "n": len(self.user_rows),
                                        "n_users": n_users}
        return out

    def means(self) -> dict[str, float]:
        """Metric name -> mean (median_popularity as it is): what goes into a manifest."""
        out = {name: float(np.mean(values)) for name, values in self.metrics.items()}
        if self.median_popularity is not None:
            out["median_popularity"] = self.median_popularity
        return out

    def to_table(self, label: str = "model") -> str:
        """This report as a markdown table (see :func:`table`)."""
        return table([self], [label])

    def column(self, name: str) -> str:
        """Table header of a metric: 'ndcg@10'; 'median popularity' has no K."""
        return "median popularity" if name == "median_popularity" else f"{name}@{self.k}"

    def describe(self) -> str:
        """One line naming the protocol, e.g. 'full ranking, test, @10'."""
        if self.protocol == "sampled":
            return f"sampled ({self.n_negatives} negatives), {self.stage}, @{self.k}"
        return f"full ranking, {self.stage}, @{self.k}"


def table(reports: Sequence[EvalReport], labels: Sequence[str] | None = None) -> str:
    """Markdown table, one row per report: `mean ± ci95` per metric.

    Raises ValueError unless every report shares protocol, stage, K and number of negatives:
    sampled and full-ranking numbers are not comparable (DESIGN §2), so they never share a table.
    """
    if not reports:
        raise ValueError("table() needs at least one report")
    labels = list(labels) if labels is not None else [f"model {i}" for i in range(len(reports))]
    if len(labels) != len(reports):
        raise ValueError("one label per report")
    first = reports[0]
    for rep in reports[1:]:
        if rep.protocol != first.protocol:
            raise ValueError(
                f"cannot mix protocols in one table ({first.protocol!r} and {rep.protocol!r}): "
                "sampled and full-ranking metrics disagree; make one table per protocol")
        if (rep.stage, rep.k, rep.n_negatives) != (first.stage, first.k, first.n_negatives):
            raise ValueError(f"cannot mix '{first.describe()}' and '{rep.describe()}' in one table")
    names = list(first.summary())
    over = "test pairs" if first.protocol == "sampled" else "users"
    lines = [f"{first.describe()} (mean ± 95% CI over {over})", "",
             "| " + " | ".join(["model", *map(first.column, names), "users"]) + " |",
             "|" + "---|" * (len(names) + 2)]
    for label, rep in zip(labels, reports, strict=True):
        summ = rep.summary()
        cells = [_cell(summ.get(name)) for name in names]
        n_users = len(np.unique(rep.user_rows))
        lines.append("| " + " | ".join([label, *cells, str(n_users)]) + " |")
    return "\n".join(lines)


def _cell(stats: dict[str, float | int | None] | None) -> str:
    if stats is None:
        return ""
    mean, ci95 = stats["mean"], stats["ci95"]
    if ci95 is None:
        return f"{mean:.4g}"
    return f"{mean:.4f} ± {ci95:.4f}"


def format_metrics(doc: dict[str, Any]) -> str:
    """A `metrics.json` document (`training.pipeline.metrics_document`) as two markdown
    tables, full ranking then sampled: the document's rendering of :func:`table`'s rule that
    the two protocols never share a table. What `relrec train` prints."""
    k = doc["k"]
    m = doc["metrics"]
    names = ["precision", "recall", "ndcg", "map", "mrr"]
    lines = [f"full ranking @{k} ({doc['model']}, split {doc['split']})", "",
             "| " + " | ".join(f"{n}@{k}" for n in names) + " | median pop |",
             "|" + "---|" * (len(names) + 1),
             "| " + " | ".join(_document_cell(m[n], doc["spread"][n]["ci95"]) for n in names)
             + f" | {m['median_popularity']:.0f} |"]
    if "sampled" in doc:
        s = doc["sampled"]
        lines += ["", f"sampled protocol ({s['n_negatives']} negatives)", "",
                  f"| HR@{k} | NDCG@{k} |", "|---|---|", f"| {s['hr']:.4f} | {s['ndcg']:.4f} |"]
    return "\n".join(lines)


def _document_cell(mean: float, ci95: float | None) -> str:
    return f"{mean:.4f}" if ci95 is None else f"{mean:.4f} ± {ci95:.4f}"


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k best scores, best first: [B, n_items] -> [B, k] int64.

    argpartition then a sort of the k survivors (O(V + k log k) per row rather than
    O(V log V)). Slots whose score is -inf (excluded items) and slots past the catalogue
    size are -1, so that they can never count as hits or as recommended items.
    """
    kk = min(k, scores.shape[1])
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]  # [B, kk] unordered
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    top = np.take_along_axis(part, order, axis=1)
    top[np.take_along_axis(part_scores, order, axis=1) == -np.inf] = -1
    if kk < k:
        top = np.pad(top, ((0, 0), (0, k - kk)), constant_values=-1)
    return top.astype(np.int64)


def full_ranking(
    scorer: Scorer,
    split: SplitLike,
    k: int = 10,
    stage: Stage = "test",
    batch_size: int = 256,
    users: np.ndarray | None = None,
    progress: bool = True,
) -> EvalReport:
    """Full-ranking protocol (DESIGN §2): rank every item, report the @k metrics per user.

    Users with >= 1 item in `stage` are evaluated (optionally only those in `users`). Their
    train items, and at test time their validation items, are known, so their scores are set
    to -inf. Target items that are also known are dropped from the relevant set, since they
    could never be recommended. Popularity for `median_popularity` is the train count.
    """
    relevant, known = _stage_matrices(split, stage)
    rows = _eval_users(relevant, users, stage)
    n_items = split.train.n_items
    tops, hits, n_rel = [], [], []
    for batch in tqdm(_batches(rows, batch_size), total=-(-len(rows) // batch_size),
                      desc=f"full ranking ({stage})", disable=not progress, leave=False):
        scores = _checked_scores(scorer.score(batch), (len(batch), n_items))
        _set_entries(scores, known[batch], -np.inf)
        top = top_k(scores, k)  # [B, k]
        h, n = hits_at_k(top, relevant[batch])
        tops.append(top)
        hits.append(h)
        n_rel.append(n)
    top_all, h, n = np.concatenate(tops), np.concatenate(hits), np.concatenate(n_rel)
    metrics = {"precision": precision_at_k(h), "recall": recall_at_k(h, n),
               "ndcg": ndcg_at_k(h, n), "map": map_at_k(h, n), "mrr": mrr_at_k(h)}
    pop = median_popularity(top_all, split.train.item_popularity())
    return EvalReport("full", k, stage, metrics, rows, median_popularity=pop, top=top_all)


def write_top_k(report: EvalReport, split: SplitLike, path: str | Path) -> Path:
    """Write a full-ranking report's lists as CSV `user,item,rank` in external ids (rank 1 is
    the best), so that an evaluator outside relrec can re-score the run from this file and the
    split alone. Slots with no item (catalogue smaller than K) are left out."""
    if report.top is None:
        raise ValueError("only a full-ranking report carries top-k lists")
    users, items = split.train.users.ids, split.train.items.ids
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["user", "item", "rank"])
        for user_row, top in zip(report.user_rows, report.top, strict=True):
            for rank, item_row in enumerate(top[top >= 0], start=1):
                writer.writerow([users[user_row], items[item_row], rank])
    return out


def sampled(
    scorer: Scorer,
    split: SplitLike,
    n_negatives: int = 100,
    k: int = 10,
    seed: int = 0,
    stage: Stage = "test",
    batch_size: int = 1024,
    progress: bool = True,
) -> EvalReport:
    """Sampled protocol (LRML, He et al. NCF 2017): HR@k and NDCG@k of the held-out item.

    Every distinct (user, item) pair of `stage` is one entry: one per user for a leave-one-out
    split, several per user for the per-user and global splits. Each pair's item is ranked
    against `n_negatives` items drawn uniformly, with replacement, from the items that user never
    interacted with in train, valid or test (rejection sampling; the same `seed` and
    `batch_size` give the same negatives). Rank = number of negatives scoring >= the positive:
    ties count against the positive, so a constant scorer gets 0, not 1 (Sun et al., RecSys
    2020, on tie handling). HR = [rank < k]; NDCG = 1 / log2(rank + 2) if rank < k else 0
    (one relevant item, so IDCG = 1).
    """
    _check_shared_maps(split)
    target = _stage_log(split, stage)
    n_items = split.train.n_items
    keys = np.unique(target.user_rows * n_items + target.item_rows)  # distinct pairs
    if len(keys) == 0:
        raise ValueError(f"no {stage} interaction to rank: the {stage} log is empty")
    pair_users, pair_items = keys // n_items, keys % n_items
    seen = _union_csr([split.train, split.valid, split.test])
    sampler = NegativeSampler(seen.indptr, seen.indices, n_items)
    rng = np.random.default_rng(seed)
    ranks = []
    for idx in tqdm(_batches(np.arange(len(keys)), batch_size),
                    total=-(-len(keys) // batch_size), desc=f"sampled ({stage})",
                    disable=not progress, leave=False):
        # drawn per batch, so memory stays O(batch_size * n_negatives) on large test sets
        negs = sampler.sample(rng, np.repeat(pair_users[idx], n_negatives))
        negs = negs.reshape(len(idx), n_negatives)  # [B, n_neg]
        cands = np.concatenate([pair_items[idx, None], negs], axis=1)  # [B, 1 + n_neg]
        s = _checked_scores(scorer.score_items(pair_users[idx], cands), cands.shape)
        ranks.append((s[:, 1:] >= s[:, :1]).sum(axis=1))
    rank = np.concatenate(ranks) if ranks else np.zeros(0, np.int64)
    hits = rank[:, None] == np.arange(k)  # [P, k]: the positive sits at 0-based position rank
    metrics = {"hr": hit_rate_at_k(hits), "ndcg": ndcg_at_k(hits, np.ones(len(rank), np.int64))}
    return EvalReport("sampled", k, stage, metrics, pair_users, n_negatives=n_negatives)


def _stage_log(split: SplitLike, stage: str) -> Interactions:
    if stage == "test":
        return split.test
    if stage == "valid":
        return split.valid
    raise ValueError(f"stage must be 'test' or 'valid', got {stage!r}")


def _stage_matrices(split: SplitLike, stage: str) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """(relevant, known) binary CSR [n_users, n_items]; known = train (+ valid at test time)."""
    _check_shared_maps(split)
    target = _stage_log(split, stage)
    known = _union_csr([split.train, split.valid] if stage == "test" else [split.train])
    relevant = target.to_csr()
    relevant = relevant - relevant.multiply(known)  # 0 where a target item is already known
    relevant.eliminate_zeros()
    return relevant.tocsr(), known


def _union_csr(logs: Sequence[Interactions]) -> sparse.csr_matrix:
    """Binary CSR of the union of several logs, canonical (sorted, duplicate-free indices)."""
    m = logs[0].to_csr()
    for log in logs[1:]:
        m = m + log.to_csr()
    m = sparse.csr_matrix(m)
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def _check_shared_maps(split: SplitLike) -> None:
    shapes = {(x.n_users, x.n_items) for x in (split.train, split.valid, split.test)}
    if len(shapes) != 1:
        raise ValueError(f"train/valid/test must share id maps; got (users, items) {shapes}")


def _eval_users(relevant: sparse.csr_matrix, users: np.ndarray | None, stage: str) -> np.ndarray:
    rows = np.flatnonzero(np.diff(relevant.indptr) > 0).astype(np.int64)
    if users is not None:
        rows = np.intersect1d(rows, np.asarray(users, dtype=np.int64))
    if len(rows) == 0:
        raise ValueError(f"no user to evaluate: none has an unseen {stage} item")
    return rows


def _batches(rows: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(rows), batch_size):
        yield rows[start:start + batch_size]


def _checked_scores(scores: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A writable float copy of the scorer's output (it may return a shared or read-only view)."""
    scores = np.array(scores, dtype=np.result_type(np.asarray(scores).dtype, np.float32))
    if scores.shape != shape:
        raise ValueError(f"scorer returned shape {scores.shape}, expected {shape}")
    if np.isnan(scores).any():
        raise ValueError("scorer returned NaN scores; did training diverge?")
    return scores


def _set_entries(scores: np.ndarray, mask: sparse.csr_matrix, value: float) -> None:
    """scores[b, j] = value for every non-zero (b, j) of `mask` (row-aligned with scores)."""
    rows = np.repeat(np.arange(mask.shape[0]), np.diff(mask.indptr))
    scores[rows, mask.indices] = value
