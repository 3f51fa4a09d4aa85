"""The training run directory: what `relrec train` leaves behind and `relrec export` reads.

Stage: between the trainer and the exporter. `save_run` writes the model (its `ModelConfig`,
sizes and state dict, as nanoGPT's checkpoint carries `model_args`), the training interactions
with their id maps (the exporter needs them for popularity and histories), the evaluation
metrics and the resolved training config. `load_run` rebuilds the model through
`models.registry.build_model`, so a run needs no code beyond this repository to be exported.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from models.base import RelationalModel
from models.config import ModelConfig
from models.durable import atomic_path
from models.idmap import IdMap
from models.registry import build_model
from training.interactions import Interactions

__all__ = ["CheckpointError", "Run", "load_run", "save_run"]

MODEL_FILE = "model.pt"
TRAIN_FILE = "train.npz"
USER_IDS_FILE = "user_ids.json"
ITEM_IDS_FILE = "item_ids.json"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"
RUN_FORMAT = "relrec-run/1"  # stored in model.pt, tells a run from any other checkpoint


class CheckpointError(ValueError):
    """A run directory is missing, incomplete or not a relrec run; the message says the fix."""


@dataclass(frozen=True)
class Run:
    """A trained model with the data and the reports it was trained and evaluated on."""

    model: RelationalModel
    train: Interactions
    metrics: dict[str, Any]
    config: dict[str, Any]


def save_run(run_dir: str | Path, model: RelationalModel, train: Interactions, *,
             metrics: dict[str, Any], config: dict[str, Any]) -> Path:
    """Write the run directory; each file goes through a temp name, so none is half-written."""
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (train.n_users, train.n_items) != (model.n_users, model.n_items):
        raise CheckpointError(
            f"the model has {model.n_users} users x {model.n_items} items but the training data "
            f"{train.n_users} x {train.n_items}: save the split's train set the model was built on")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _atomic(out / MODEL_FILE, lambda p: torch.save(
        {"format": RUN_FORMAT, "config": model.config.model_dump(mode="json"),
         "n_users": model.n_users, "n_items": model.n_items, "state_dict": state}, p))
    arrays = {"user_rows": train.user_rows, "item_rows": train.item_rows,
              "weights": train.weights}
    if train.timestamps is not None:
        arrays["timestamps"] = train.timestamps
    _atomic(out / TRAIN_FILE, lambda p: _savez(p, arrays))
    _write_json(out / USER_IDS_FILE, train.users.to_list())
    _write_json(out / ITEM_IDS_FILE, train.items.to_list())
    _write_json(out / METRICS_FILE, metrics)
    _write_json(out / CONFIG_FILE, config)
    return out


def load_run(run_dir: str | Path) -> Run:
    """Rebuild the model and the training interactions of a run directory."""
    root = Path(run_dir)
    if not root.is_dir():
        raise CheckpointError(f"run directory {root} does not exist; train one with "
                              f"`relrec train --out {root}`")
    missing = [n for n in (MODEL_FILE, TRAIN_FILE, USER_IDS_FILE, ITEM_IDS_FILE)
               if not (root / n).is_file()]
    if missing:
        raise CheckpointError(
            f"{root} is not a complete relrec training run (missing {', '.join(missing)}); "
            f"a pop or als run from before issue 16 saved no model: train it again")
    model = _load_model(root / MODEL_FILE)
    train = _load_train(root)
    if (train.n_users, train.n_items) != (model.n_users, model.n_items):
        raise CheckpointError(f"{root}: the id maps do not match the model's tables; the run "
                              f"directory mixes files of different runs")
    return Run(model, train, _read_json(root / METRICS_FILE, {}),
               _read_json(root / CONFIG_FILE, {}))


def _load_model(path: Path) -> RelationalModel:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about foreign pickles before failing
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a foreign or truncated file
        raise CheckpointError(f"cannot read {path} ({type(exc).__name__}: {exc}); it is "
                              f"truncated or not a relrec checkpoint: re-train") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != RUN_FORMAT:
        raise CheckpointError(f"{path} is not a relrec run checkpoint (format "
                              f"{RUN_FORMAT!r} expected)")
    try:
        cfg = ModelConfig.model_validate(ckpt["config"])
    except ValidationError as exc:
        raise CheckpointError(f"{path}: invalid model config: {exc}") from None
    model = build_model(cfg, int(ckpt["n_users"]), int(ckpt["n_items"]))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the state dict does not fit a {cfg.kind} model "
                              f"({exc})") from None
    return model.eval()


def _load_train(root: Path) -> Interactions:
    users = IdMap.from_ids(_read_json(root / USER_IDS_FILE, None))
    items = IdMap.from_ids(_read_json(root / ITEM_IDS_FILE, None))
    try:
        with np.load(root / TRAIN_FILE, allow_pickle=False) as npz:
            ts = npz["timestamps"].astype(np.int64) if "timestamps" in npz.files else None
            return Interactions(npz["user_rows"].astype(np.int64),
                                npz["item_rows"].astype(np.int64),
                                npz["weights"].astype(np.float32), ts, users, items)
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise CheckpointError(f"cannot read {root / TRAIN_FILE} ({exc}); re-train") from None


def _read_json(path: Path, default: Any) -> Any:
    if not path.is_file():
        if default is None:
            raise CheckpointError(f"{path} is missing")
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); re-train") from None


def _write_json(path: Path, doc: Any) -> None:
    _atomic(path, lambda p: p.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8"))


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object keeps numpy from appending ".npz"
        np.savez(f, **arrays)


def _atomic(path: Path, write: Any) -> None:
    """Call `write(tmp)` then rename tmp over `path`: a crash never leaves half a file."""
    with atomic_path(path) as tmp:
        write(tmp)
