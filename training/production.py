"""Production run: after selection on validation, refit on every interaction (issue 16).

Stage: the end of `training.pipeline.run` when `TrainConfig.final` is set (`relrec train
--final`). The evaluation path (k-core, train/valid/test) exists to compare models and to pick
the epoch count; what is served should learn from everything known and cover the whole
catalogue. So this stage re-reads the log, keeps every positive of every item with at least
`data.min_item_interactions` positives (and every user with one), trains the same model kind
from scratch for the selected number of epochs (no validation left to stop on) and writes it
into the run directory in place of the selection model: `relrec export` then serves it, with
each user's history being every interaction known for them.

It also owns `known.npz`: for a run that is *not* refit, the union of the split's three parts,
so that the exported history (and the seen set the service excludes) is still everything known
for each user, not the training 80% alone.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from training.config import ConfigError, TrainConfig
from training.filters import binarize
from training.interactions import DataError, Interactions, densify
from training.readers import read_log
from training.splits import Split

__all__ = ["KNOWN_FILE", "load_known", "production_interactions", "refit", "save_known"]

log = logging.getLogger(__name__)

KNOWN_FILE = "known.npz"


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


def refit(cfg: TrainConfig, out: Path, doc: dict[str, Any], epochs: int | None) -> dict[str, Any]:
    """Refit `cfg.algorithm` on every interaction and save it as the run's model.

    `doc` is the selection run's metrics document; it is written back with a `final` section
    (what was refit on, for how many epochs), which the exporter turns into the manifest's
    `training` record. Returns the updated document.
    """
    started = time.perf_counter()
    inter = production_interactions(cfg)
    empty = inter.select(np.zeros(len(inter), bool))
    everything = Split(inter, empty, empty, "all", cfg.data.seed)
    config = cfg.model_dump(mode="json")
    doc = dict(doc)
    doc["final"] = {"refit": True, "epochs": epochs, "users": inter.n_users,
                    "items": inter.n_items, "interactions": len(inter),
                    "min_item_interactions": cfg.data.min_item_interactions}
    if cfg.is_relational:
        _refit_relational(cfg, everything, out, doc, config, epochs or cfg.trainer.epochs)
    else:
        from training.baseline_export import save_baseline
        from training.pipeline import fit_baseline

        save_baseline(out, cfg.algorithm, fit_baseline(cfg, inter), inter, metrics=doc,
                      config=config)
    doc["final"]["fit_time_s"] = time.perf_counter() - started
    (out / KNOWN_FILE).unlink(missing_ok=True)  # the model's own data is everything now
    _write_metrics(out, doc)
    return doc


def _refit_relational(cfg: TrainConfig, everything: Split, out: Path, doc: dict[str, Any],
                      config: dict[str, Any], epochs: int) -> None:
    """Same model kind and hyper-parameters, trained from the same seed on everything."""
    import torch

    from models.registry import build_model
    from training.checkpoint import save_run
    from training.dataset import TrainDataset
    from training.pipeline import build_objective
    from training.trainer import Trainer

    assert cfg.model is not None
    inter = everything.train
    torch.manual_seed(cfg.trainer.seed)
    model = build_model(cfg.model, inter.n_users, inter.n_items)
    dataset = TrainDataset(inter, cfg.model.l_max, cfg.model.uses_history,
                           cfg.model.history_sampling, cfg.model.history_dropout)
    objective = build_objective(cfg, everything, model)
    trainer_cfg = cfg.trainer.model_copy(update={"epochs": epochs})
    log.info("refit on every interaction for %d epochs", epochs)
    Trainer(model, trainer_cfg, objective=objective).fit(dataset, None)
    text_items = objective.text_only_items() if hasattr(objective, "text_only_items") else None
    save_run(out, model, inter, metrics=doc, config=config)
    if text_items is not None:
        from training.text_items import save_text_items

        save_text_items(out, text_items)
        doc["final"]["text_items"] = len(text_items)


def _write_metrics(out: Path, doc: dict[str, Any]) -> None:
    import json

    (out / "metrics.json").write_text(json.dumps(doc, indent=2) + "\n")


# -- the known history of a run that is not refit ----------------------------------------------


def save_known(out: Path, split: Split) -> Path:
    """Write the union of train, valid and test (same id maps as the run's train.npz)."""
    parts = (split.train, split.valid, split.test)
    arrays = {"user_rows": np.concatenate([p.user_rows for p in parts]),
              "item_rows": np.concatenate([p.item_rows for p in parts])}
    if all(p.timestamps is not None for p in parts):
        arrays["timestamps"] = np.concatenate([p.timestamps for p in parts])  # type: ignore[misc]
    path = out / KNOWN_FILE
    with open(path, "wb") as f:  # a file object keeps numpy from appending ".npz"
        np.savez(f, **arrays)
    return path


def load_known(run_dir: str | Path, train: Interactions) -> Interactions | None:
    """Every known interaction of a run over `train`'s id maps, or None without `known.npz`."""
    path = Path(run_dir) / KNOWN_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as npz:
        users, items = npz["user_rows"].astype(np.int64), npz["item_rows"].astype(np.int64)
        ts = npz["timestamps"].astype(np.int64) if "timestamps" in npz.files else None
    if len(users) and (users.max() >= train.n_users or items.max() >= train.n_items):
        raise DataError(f"{path} does not match the run's id maps; re-train")
    return Interactions(users, items, np.ones(len(users), np.float32), ts, train.users,
                        train.items)
