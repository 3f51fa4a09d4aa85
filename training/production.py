"""Production run: after selection on validation, refit on every interaction (issue 16).

Stage: the end of `training.pipeline.run` when `TrainConfig.final` is set (`relrec train
--final`). The evaluation path (k-core, train/valid/test) exists to compare models and to pick
the epoch count; what is served should learn from everything known and cover the whole
catalogue. So this stage re-reads the log, keeps every positive of every item with at least
`data.min_item_interactions` positives (and every user with one) and trains the same model kind
from scratch for the selected number of epochs (no validation left to stop on); the pipeline
saves that model in place of the selection model: `relrec export` then serves it, with each
user's history being every interaction known for them.

For a run that is *not* refit, `known_interactions` is the union of the split's three parts, so
that the exported history (and the seen set the service excludes) is still everything known
for each user, not the training 80% alone.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from training.config import ConfigError, TrainConfig
from training.filters import binarize
from training.interactions import DataError, Interactions, densify
from training.readers import read_log
from training.run_dir import Run
from training.splits import Split

__all__ = ["known_interactions", "production_interactions", "refit"]

log = logging.getLogger(__name__)


def production_interactions(cfg: TrainConfig) -> Interactions:
    """Every positive of the log, minus items with fewer than `min_item_interactions`
    positives (one pass: a production catalogue is not a k-core), ids re-densified."""
    if not cfg.data.path:
        raise ConfigError("data.path is required: pass --data PATH")
    pos = binarize(read_log(cfg.data.path, cfg.data.format, cfg.data.columns),
                   cfg.data.min_rating)
    counts = np.bincount(pos.item_rows, minlength=pos.n_items)
    keep = counts[pos.item_rows] >= cfg.data.min_item_interactions
    if not keep.any():
        raise DataError(f"no item has {cfg.data.min_item_interactions} positives; lower "
                        f"--min-item-interactions")
    inter = densify(pos.select(keep))
    log.info("production data: %d users, %d items, %d interactions", inter.n_users,
             inter.n_items, len(inter))
    return inter


def refit(cfg: TrainConfig, doc: dict[str, Any], epochs: int | None) -> Run:
    """Refit `cfg.algorithm` on every interaction: the run to save and serve.

    `doc` is the selection run's metrics document; the returned run's has a `final` section
    (what was refit on, for how many epochs), which the exporter turns into the manifest's
    `training` record. The run has no `known`: its training data is everything known.
    """
    from training.baseline_export import baseline_arrays
    from training.pipeline import fit_baseline, fit_model

    started = time.perf_counter()
    inter = production_interactions(cfg)
    doc = dict(doc)
    doc["final"] = {"refit": True, "epochs": epochs, "users": inter.n_users,
                    "items": inter.n_items, "interactions": len(inter),
                    "min_item_interactions": cfg.data.min_item_interactions}
    config = cfg.model_dump(mode="json")
    if not cfg.is_relational:
        baseline = baseline_arrays(cfg.algorithm, fit_baseline(cfg, inter))
        doc["final"]["fit_time_s"] = time.perf_counter() - started
        return Run(inter, doc, config, baseline=baseline)
    # Same model kind and hyper-parameters from the same seed, for the selected epochs: an
    # empty validation set leaves nothing to stop on.
    empty = inter.select(np.zeros(len(inter), bool))
    everything = Split(inter, empty, empty, "all", cfg.data.seed)
    epochs = epochs or cfg.trainer.epochs
    log.info("refit on every interaction for %d epochs", epochs)
    fit = fit_model(cfg.model_copy(update={
        "trainer": cfg.trainer.model_copy(update={"epochs": epochs})}), everything)
    if fit.text_items is not None:
        doc["final"]["text_items"] = len(fit.text_items)
    doc["final"]["fit_time_s"] = time.perf_counter() - started
    return Run(inter, doc, config, model=fit.model, text_items=fit.text_items)


def known_interactions(split: Split) -> Interactions:
    """Train, valid and test in one log over the split's shared id maps: what a run that is
    not refit exports as each user's history (and so as the seen set the service excludes)."""
    parts = (split.train, split.valid, split.test)
    stamps = ([p.timestamps for p in parts] if all(p.timestamps is not None for p in parts)
              else None)
    return Interactions(np.concatenate([p.user_rows for p in parts]),
                        np.concatenate([p.item_rows for p in parts]),
                        np.concatenate([p.weights for p in parts]),
                        None if stamps is None else np.concatenate(stamps),  # type: ignore[arg-type]
                        split.train.users, split.train.items)
