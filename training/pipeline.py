"""Pipeline: the main offline job, read -> filter -> split -> train -> evaluate -> save.

Reads an interaction log named by `TrainConfig.data`; assembles what the run leaves (a
`training.run_dir.Run`: the model or the baseline's arrays, the data, `metrics.json`'s
document, the resolved config) and has `training/run_dir.py` write it, once. With `export_to`
the same in-memory run is exported at once (`training.exporter.export_trained`), with no
reload from disk; `relrec export RUN` does the same later from the directory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.losses import hinge_loss
from models.registry import build_model
from training.baselines import ALSBaseline, EASEBaseline, MostPopular
from training.config import ConfigError, TrainConfig
from training.dataset import TrainDataset
from training.evaluator import EvalReport, full_ranking, sampled, write_top_k
from training.filters import binarize, k_core
from training.interactions import Interactions
from training.readers import read_log
from training.run_dir import Run, TextItems, save_run
from training.splits import Split, make_split
from training.text.items import ItemTextObjective, build_item_text_objective
from training.torch_scorer import ModelScorer, train_valid_histories
from training.trainer import EpochLog, Trainer, TrainResult, Validator
from training.warm_start import warm_start

log = logging.getLogger(__name__)

FULL_KEYS = ("precision", "recall", "ndcg", "map", "mrr")
# Baselines with a served artifact (training/baseline_export); EASE's V x V matrix is not one.
SERVABLE_BASELINES = ("pop", "als")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    model: torch.nn.Module | None
    split: Split
    version_dir: Path | None = None  # the exported artifact version, with `export_to`


@dataclass
class RelationalFit:
    """A trained relational model, the dataset it was trained on, the trainer's log and what
    the objective adds to the item table (the text-only items of `--item-text`, else None)."""

    model: torch.nn.Module
    dataset: TrainDataset
    result: TrainResult
    text_items: TextItems | None = None


def load_interactions(cfg: TrainConfig) -> Interactions:
    """Read, binarise and k-core the log named in `cfg.data` (before any split: the cold-start
    protocol holds items out at this point)."""
    if not cfg.data.path:
        raise ConfigError("data.path is required: pass --data PATH")
    raw = read_log(cfg.data.path, cfg.data.format, cfg.data.columns)
    inter = k_core(binarize(raw, cfg.data.min_rating), cfg.data.k_core)
    log.info("data: %d users, %d items, %d interactions after filters", inter.n_users,
             inter.n_items, len(inter))
    return inter


def prepare(cfg: TrainConfig) -> Split:
    """Read, binarise, k-core and split the log named in `cfg.data`."""
    return make_split(load_interactions(cfg), cfg.data.split, cfg.data.seed)


def fit_model(cfg: TrainConfig, split: Split, rank: int = 0, world_size: int = 1,
              on_epoch: Callable[[EpochLog], None] | None = None) -> RelationalFit:
    """Build and train a relational model, selecting the epoch on validation (none to select
    on when `split.valid` is empty: a refit trains for `cfg.trainer.epochs`).

    Under DDP every rank builds the same initial model from the same seed; rank 0 validates.
    `on_epoch` is the trainer's per-epoch hook (`relrec tune` reports to its study there).
    """
    torch.manual_seed(cfg.trainer.seed)
    model = build_model(cfg.model, split.train.n_users, split.train.n_items)
    if cfg.trainer.init_from:
        warm_start(model, cfg.trainer.init_from, split.train)
    dataset = TrainDataset(split.train, cfg.model.l_max, cfg.model.uses_history,
                           cfg.model.history_sampling, cfg.model.history_dropout)
    validate = make_validator(cfg, split, dataset)
    objective = build_objective(cfg, split, model)
    result = Trainer(model, cfg.trainer, rank, world_size, objective).fit(dataset, validate,
                                                                          on_epoch)
    text_items = (objective.text_only_items() if isinstance(objective, ItemTextObjective)
                  else None)
    return RelationalFit(model, dataset, result, text_items)


def fit_relational(cfg: TrainConfig, split: Split, rank: int = 0, world_size: int = 1,
                   on_epoch: Callable[[EpochLog], None] | None = None
                   ) -> tuple[torch.nn.Module, TrainDataset, TrainResult]:
    """`fit_model` as (model, dataset, trainer result): what `relrec tune` and the benches
    read."""
    fit = fit_model(cfg, split, rank, world_size, on_epoch)
    return fit.model, fit.dataset, fit.result


def build_objective(cfg: TrainConfig, split: Split,
                    model: torch.nn.Module) -> torch.nn.Module | None:
    """The loss beyond the plain hinge, or None: SERML's review regression (training/text/semantic),
    then the item-text terms when `text.item_text` is set (training/text/items)."""
    assert cfg.model is not None
    objective = None
    if cfg.model.kind == "serml":
        from training.text.semantic import build_semantic_objective

        objective = build_semantic_objective(cfg.text, split, model,
                                             cfg.text.reviews or cfg.data.path,
                                             cfg.trainer.device, cfg.trainer.progress)
    if cfg.text.item_text:
        objective = build_item_text_objective(cfg.text, split, model, objective,
                                              cfg.trainer.device, cfg.trainer.progress)
    return objective


def make_validator(cfg: TrainConfig, split: Split, dataset: TrainDataset) -> Validator | None:
    """NDCG@k on (a sample of) validation users, or minus the validation hinge loss."""
    valid_users = np.unique(split.valid.user_rows)
    if len(valid_users) == 0:
        return None
    if cfg.trainer.eval_users and len(valid_users) > cfg.trainer.eval_users:
        rng = np.random.default_rng(cfg.trainer.seed)
        valid_users = np.sort(rng.choice(valid_users, cfg.trainer.eval_users, replace=False))
    if cfg.trainer.select_by == "loss":
        return lambda model: -validation_loss(model, split.valid, dataset, cfg.trainer.seed)

    def validate(model: torch.nn.Module) -> float:
        scorer = ModelScorer(model, dataset, seed=cfg.trainer.seed)
        report = full_ranking(scorer, split, k=cfg.eval.k, stage="valid", users=valid_users,
                              batch_size=cfg.eval.batch_size, progress=False)
        return report.means()["ndcg"]

    return validate


@torch.no_grad()
def validation_loss(model: torch.nn.Module, valid: Interactions, dataset: TrainDataset,
                    seed: int) -> float:
    """Mean hinge loss on validation pairs (the HLR reference's selection criterion)."""
    model.eval()
    rng = np.random.default_rng(seed)
    device = next(model.parameters()).device
    total = 0.0
    for start in range(0, len(valid), 4096):
        users = valid.user_rows[start:start + 4096]
        pos = valid.item_rows[start:start + 4096]
        neg = dataset.negatives.sample(rng, users)
        hist, mask = dataset.histories(rng, users)
        tensors = [torch.from_numpy(a).to(device) for a in (users, pos, neg, hist, mask)]
        d_pos, d_neg = model.triplet_distances(*tensors)
        total += float(hinge_loss(d_pos, d_neg, model.config.margin))
    model.train()
    return total / max(len(valid), 1)


def evaluate(scorer: Any, split: Split, cfg: TrainConfig) -> tuple[EvalReport, EvalReport | None]:
    """Full-ranking test report, and the sampled one when enabled (never in one table)."""
    full = full_ranking(scorer, split, k=cfg.eval.k, stage="test",
                        batch_size=cfg.eval.batch_size, progress=cfg.trainer.progress)
    samp = (sampled(scorer, split, n_negatives=cfg.eval.sampled_negatives, k=cfg.eval.k,
                    seed=cfg.data.seed) if cfg.eval.sampled else None)
    return full, samp


def metrics_document(cfg: TrainConfig, full: EvalReport, samp: EvalReport | None,
                     extra: dict[str, Any]) -> dict[str, Any]:
    """The `metrics.json` shape shared by every algorithm (issue "Foundation")."""
    k = cfg.eval.k
    summary = full.summary()
    doc: dict[str, Any] = {
        "model": cfg.algorithm,
        "split": cfg.data.split,
        "protocol": "full",
        "k": k,
        "metrics": {name: summary[name]["mean"] for name in FULL_KEYS},
        "spread": {name: {key: _finite(summary[name][key]) for key in ("std", "ci95", "n_users")}
                   for name in FULL_KEYS},
    }
    doc["metrics"]["median_popularity"] = full.median_popularity
    if samp is not None:
        means = samp.means()
        doc["sampled"] = {"hr": means["hr"], "ndcg": means["ndcg"],
                          "n_negatives": cfg.eval.sampled_negatives}
    doc.update(extra)
    return doc


def _finite(value: Any) -> Any:
    """JSON has no NaN: a spread over fewer than two users is written as null."""
    return None if isinstance(value, float) and value != value else value


def run(cfg: TrainConfig, out_dir: str | Path, split: Split | None = None, rank: int = 0,
        world_size: int = 1, topk_out: str | Path | None = None,
        export_to: str | Path | None = None) -> RunResult:
    """Train `cfg.algorithm`, evaluate it, and write the run directory `out_dir`.

    With `world_size > 1` (torchrun) every rank trains; only rank 0 evaluates and writes.
    `topk_out` names a CSV for the test users' top-k lists (`write_top_k`). `export_to` (an
    artifacts directory) exports the saved run from memory as its new current version.
    """
    servable = cfg.algorithm in SERVABLE_BASELINES or cfg.is_relational
    if (cfg.final or export_to is not None) and not servable:
        flag = "--final" if cfg.final else "--export-to"
        raise ConfigError(f"{flag}: {cfg.algorithm} is an evaluation baseline with nothing to "
                          f"serve; use {' or '.join(SERVABLE_BASELINES)} or a relational model")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)  # before training: --topk-out may point inside
    split = split if split is not None else prepare(cfg)
    started = time.perf_counter()
    extra: dict[str, Any] = {"data": {"users": split.train.n_users,
                                      "items": split.train.n_items,
                                      "train": len(split.train), "valid": len(split.valid),
                                      "test": len(split.test)}}
    fit = None
    if cfg.is_relational:
        fit = fit_model(cfg, split, rank, world_size)
        if rank != 0:
            return RunResult(out, {}, fit.model, split)
        # test-time histories are train + validation items (the HLR reference code's protocol)
        scorer: Any = ModelScorer(fit.model, train_valid_histories(fit.dataset, split.train,
                                                                   split.valid),
                                  seed=cfg.trainer.seed)
        extra["training"] = training_summary(fit.result, cfg.trainer.select_by)
        if fit.text_items is not None:
            extra["text_items"] = {"count": len(fit.text_items),
                                   "encoder": fit.text_items.encoder}
    else:
        scorer = fit_baseline(cfg, split.train)
    extra["fit_time_s"] = time.perf_counter() - started
    full, samp = evaluate(scorer, split, cfg)
    if topk_out is not None:
        write_top_k(full, split, topk_out)
    doc = metrics_document(cfg, full, samp, extra)
    saved = served_run(cfg, split, doc, fit, scorer)
    save_run(out, saved)
    version_dir = None
    if export_to is not None:
        from training.exporter import export_trained

        version_dir = export_trained(saved, export_to)
    return RunResult(out, saved.metrics, fit.model if fit else None, split, version_dir)


def training_summary(result: TrainResult, select_by: str) -> dict[str, Any]:
    """`metrics.json`'s `training` section: the selected epoch and the validation curve."""
    return {"best_epoch": result.best_epoch, "epochs": len(result.epochs),
            "epoch_time_s": result.mean_epoch_time_s, "data_share": result.data_share,
            "best_valid": result.best_valid, "select_by": select_by,
            # The curve, so that "was it still improving?" needs no rerun.
            "curve": [{"epoch": e.epoch, "loss": round(e.loss, 6), "valid": round(e.valid, 6),
                       "time_s": round(e.time_s, 2)} for e in result.epochs]}


def served_run(cfg: TrainConfig, split: Split, doc: dict[str, Any], fit: RelationalFit | None,
               scorer: Any) -> Run:
    """What the run directory keeps: with `--final`, the model refit on every interaction
    (issue 16); else the evaluated model, with everything known as the served history."""
    from training.baseline_export import baseline_arrays
    from training.production import known_interactions, refit

    if cfg.final:
        return refit(cfg, doc, fit.result.best_epoch if fit is not None else None)
    config = cfg.model_dump(mode="json")
    baseline = (baseline_arrays(cfg.algorithm, scorer)
                if fit is None and cfg.algorithm in SERVABLE_BASELINES else None)
    return Run(split.train, doc, config, model=fit.model if fit else None, baseline=baseline,
               known=known_interactions(split), text_items=fit.text_items if fit else None)


def fit_baseline(cfg: TrainConfig, train: Interactions) -> Any:
    if cfg.algorithm == "pop":
        return MostPopular().fit(train)
    b = cfg.baseline
    if cfg.algorithm == "ease":
        return EASEBaseline(l2=b.ease_l2).fit(train)
    return ALSBaseline(factors=b.factors, iterations=b.iterations,
                       regularization=b.regularization, alpha=b.alpha,
                       seed=cfg.trainer.seed).fit(train)
