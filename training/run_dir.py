"""The run directory: the one reader and writer of what `relrec train` leaves behind.

Stage: between training and export. `training.pipeline.run` assembles a `Run` in memory and
`save_run` writes it once; `load_run` reads it back for `relrec export` (and `relrec report`
reads the metrics and the popularity through here too). A run directory holds:

- `model.pt` (relational models): nanoGPT's checkpoint shape, the model arguments
  (`ModelConfig`, table sizes), the resolved training config and the state dict together,
  so that `models.registry.build_model` rebuilds the model from the file alone;
- `baseline.npz` (most popular, ALS): the fitted arrays `training/baseline_export.py` serves;
- `train.npz` + `user_ids.json` + `item_ids.json`: the interactions the model's rows index
  (the id maps are the row order), from which the export takes popularity;
- `known.npz`: every interaction known (train + valid + test over the same id maps) when the
  model was not refit on everything: the exported histories (issue 16);
- `text_items.npz`: items with text and no interaction, appended to the item table at export;
- `metrics.json` (the shape every algorithm shares) and `config.json` (the resolved config,
  readable without torch; a baseline run has no checkpoint to carry it).

Every file goes through a temp name and a rename, so none is ever half-written. Runs written
before issue 17 (checkpoint `relrec-run/1`, `baseline_train.npz` + `baseline_ids.json`) load too.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from models.config import ModelConfig
from models.durable import atomic_path
from models.idmap import IdMap
from training.interactions import DataError, Interactions

if TYPE_CHECKING:
    from models.base import RelationalModel

__all__ = ["METRICS_FILE", "Run", "RunDirError", "TextItems", "item_popularity", "load_run",
           "read_metrics", "save_run"]

MODEL_FILE = "model.pt"
BASELINE_FILE = "baseline.npz"
TRAIN_FILE = "train.npz"
USER_IDS_FILE = "user_ids.json"
ITEM_IDS_FILE = "item_ids.json"
KNOWN_FILE = "known.npz"
TEXT_ITEMS_FILE = "text_items.npz"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"
RUN_FORMAT = "relrec-run/2"  # stored in model.pt, tells a run from any other checkpoint
# Read, never written: the checkpoint before issue 17 (no training config inside), and the
# training data file names of pop/ALS runs before issue 17.
_V1_FORMAT = "relrec-run/1"
_V1_BASELINE_TRAIN, _V1_BASELINE_IDS = "baseline_train.npz", "baseline_ids.json"


class RunDirError(ValueError):
    """A run directory is missing, incomplete or not a relrec run; the message says the fix."""


@dataclass(frozen=True)
class TextItems:
    """What a run adds to the item table at export: ids, vectors `[K, d]`, the encoder used."""

    ids: list[str]
    vectors: np.ndarray  # [K, d] float32, inside the unit ball
    encoder: str
    # The learned text projection W [d, D], b [d] (issue 20: the export writes it so that the
    # service places new items); None in runs saved before it.
    projection_weight: np.ndarray | None = None
    projection_bias: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Run:
    """A trained model (relational or baseline) with the data and reports it came with.

    `train` is what the model's rows index; `known` every interaction known over the same id
    maps (None when `train` is everything, as after `--final`). Neither `model` nor `baseline`:
    an evaluation-only run (EASE), which has metrics but nothing to export.
    """

    train: Interactions
    metrics: dict[str, Any]
    config: dict[str, Any]
    model: RelationalModel | None = None
    baseline: dict[str, np.ndarray] | None = None
    known: Interactions | None = None
    text_items: TextItems | None = None


def save_run(run_dir: str | Path, run: Run) -> Path:
    """Write every file of `run`, and remove those of an earlier run it does not have."""
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    if run.model is not None and (run.train.n_users, run.train.n_items) != (
            run.model.n_users, run.model.n_items):
        raise RunDirError(
            f"the model has {run.model.n_users} users x {run.model.n_items} items but the "
            f"training data {run.train.n_users} x {run.train.n_items}: save the train set the "
            f"model was built on")
    stale = {MODEL_FILE: run.model, BASELINE_FILE: run.baseline, KNOWN_FILE: run.known,
             TEXT_ITEMS_FILE: run.text_items, _V1_BASELINE_TRAIN: None, _V1_BASELINE_IDS: None}
    for name, content in stale.items():
        if content is None:
            (out / name).unlink(missing_ok=True)
    if run.model is not None:
        _save_model(out / MODEL_FILE, run.model, run.config)
    if run.baseline is not None:
        _atomic(out / BASELINE_FILE, lambda p: _savez(p, run.baseline or {}))
    _save_interactions(out / TRAIN_FILE, run.train)
    _write_json(out / USER_IDS_FILE, run.train.users.to_list())
    _write_json(out / ITEM_IDS_FILE, run.train.items.to_list())
    if run.known is not None:
        _save_interactions(out / KNOWN_FILE, run.known)
    if run.text_items is not None:
        items = run.text_items
        projection = ({} if items.projection_weight is None or items.projection_bias is None
                      else {"projection_weight": items.projection_weight,
                            "projection_bias": items.projection_bias})
        _atomic(out / TEXT_ITEMS_FILE, lambda p: _savez(p, {
            "ids": np.array(json.dumps(items.ids)), "vectors": items.vectors,
            "encoder": np.array(items.encoder), **projection}))
    _write_json(out / METRICS_FILE, run.metrics)
    _write_json(out / CONFIG_FILE, run.config)
    return out


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory back: the model rebuilt, or the baseline's arrays, and its data."""
    root = Path(run_dir)
    if not root.is_dir():
        raise RunDirError(f"run directory {root} does not exist; train one with "
                          f"`relrec train --out {root}`")
    baseline = _load_npz(root / BASELINE_FILE) if (root / BASELINE_FILE).is_file() else None
    if baseline is not None:
        train = _load_train(root, _V1_BASELINE_TRAIN, _V1_BASELINE_IDS)
        return Run(train, _read_json(root / METRICS_FILE, {}), _read_json(root / CONFIG_FILE, {}),
                   baseline=baseline, known=_load_known(root, train))
    missing = [n for n in (MODEL_FILE, TRAIN_FILE, USER_IDS_FILE, ITEM_IDS_FILE)
               if not (root / n).is_file()]
    if missing:
        raise RunDirError(
            f"{root} is not a complete relrec training run (missing {', '.join(missing)}); "
            f"an EASE run, or a pop or als run from before issue 16, saved no model: train a "
            f"servable algorithm")
    model, config = _load_model(root / MODEL_FILE)
    train = _load_train(root)
    if (train.n_users, train.n_items) != (model.n_users, model.n_items):
        raise RunDirError(f"{root}: the id maps do not match the model's tables; the run "
                          f"directory mixes files of different runs")
    if config is None:  # a relrec-run/1 checkpoint: the config was only in config.json
        config = _read_json(root / CONFIG_FILE, {})
    return Run(train, _read_json(root / METRICS_FILE, {}), config, model=model,
               known=_load_known(root, train), text_items=_load_text_items(root))


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """`metrics.json` of a run, checked to be one (`relrec report` reads runs through here)."""
    path = Path(run_dir) / METRICS_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path}: cannot read {METRICS_FILE} ({exc})") from None
    if not isinstance(doc, dict) or "model" not in doc or "metrics" not in doc:
        raise RunDirError(f"{path}: not a relrec {METRICS_FILE} (no 'model' or 'metrics' key)")
    return doc


def item_popularity(run_dir: str | Path) -> tuple[list[str], np.ndarray] | None:
    """(item ids, training interactions per item) of a run, or None without training data."""
    root = Path(run_dir)
    if not ((root / TRAIN_FILE).is_file() and (root / ITEM_IDS_FILE).is_file()):
        return None
    item_ids = [str(i) for i in _read_json(root / ITEM_IDS_FILE, None)]
    with np.load(root / TRAIN_FILE, allow_pickle=False) as npz:
        return item_ids, np.bincount(npz["item_rows"], minlength=len(item_ids))


# -- the checkpoint ------------------------------------------------------------------------------


def _save_model(path: Path, model: RelationalModel, config: dict[str, Any]) -> None:
    import torch

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    model_args = {"config": model.config.model_dump(mode="json"), "n_users": model.n_users,
                  "n_items": model.n_items}
    _atomic(path, lambda p: torch.save({"format": RUN_FORMAT, "model_args": model_args,
                                        "config": config, "state_dict": state}, p))


def _load_model(path: Path) -> tuple[RelationalModel, dict[str, Any] | None]:
    """The model, and the training config when the checkpoint carries it (format 2)."""
    import torch

    from models.registry import build_model

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about foreign pickles before failing
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a foreign or truncated file
        raise RunDirError(f"cannot read {path} ({type(exc).__name__}: {exc}); it is "
                          f"truncated or not a relrec checkpoint: re-train") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") not in (RUN_FORMAT, _V1_FORMAT):
        raise RunDirError(f"{path} is not a relrec run checkpoint (format {RUN_FORMAT!r} "
                          f"expected)")
    args = ckpt["model_args"] if ckpt["format"] == RUN_FORMAT else ckpt
    try:
        cfg = ModelConfig.model_validate(args["config"])
    except ValidationError as exc:
        raise RunDirError(f"{path}: invalid model config: {exc}") from None
    model = build_model(cfg, int(args["n_users"]), int(args["n_items"]))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise RunDirError(f"{path}: the state dict does not fit a {cfg.kind} model "
                          f"({exc})") from None
    config = ckpt.get("config") if ckpt["format"] == RUN_FORMAT else None
    return model.eval(), config


# -- interactions and text items -----------------------------------------------------------------


def _save_interactions(path: Path, inter: Interactions) -> None:
    arrays = {"user_rows": inter.user_rows, "item_rows": inter.item_rows,
              "weights": inter.weights}
    if inter.timestamps is not None:
        arrays["timestamps"] = inter.timestamps
    _atomic(path, lambda p: _savez(p, arrays))


def _load_interactions(path: Path, users: IdMap, items: IdMap) -> Interactions:
    try:
        with np.load(path, allow_pickle=False) as npz:
            user_rows = npz["user_rows"].astype(np.int64)
            item_rows = npz["item_rows"].astype(np.int64)
            weights = (npz["weights"].astype(np.float32) if "weights" in npz.files
                       else np.ones(len(user_rows), np.float32))
            ts = npz["timestamps"].astype(np.int64) if "timestamps" in npz.files else None
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise RunDirError(f"cannot read {path} ({exc}); re-train") from None
    if len(user_rows) and (user_rows.max() >= len(users) or item_rows.max() >= len(items)):
        raise DataError(f"{path} does not match the run's id maps; re-train")
    return Interactions(user_rows, item_rows, weights, ts, users, items)


def _load_train(root: Path, v1_train: str | None = None, v1_ids: str | None = None
                ) -> Interactions:
    """The training interactions; a pre-issue-17 baseline run kept them under other names."""
    if v1_train and v1_ids and not (root / TRAIN_FILE).is_file():
        ids = _read_json(root / v1_ids, None)
        return _load_interactions(root / v1_train, IdMap.from_ids(ids["users"]),
                                  IdMap.from_ids(ids["items"]))
    return _load_interactions(root / TRAIN_FILE,
                              IdMap.from_ids(_read_json(root / USER_IDS_FILE, None)),
                              IdMap.from_ids(_read_json(root / ITEM_IDS_FILE, None)))


def _load_known(root: Path, train: Interactions) -> Interactions | None:
    """Every known interaction over `train`'s id maps, or None (refit: train is everything)."""
    path = root / KNOWN_FILE
    return _load_interactions(path, train.users, train.items) if path.is_file() else None


def _load_text_items(root: Path) -> TextItems | None:
    path = root / TEXT_ITEMS_FILE
    if not path.is_file():
        return None
    arrays = _load_npz(path)
    weight, bias = arrays.get("projection_weight"), arrays.get("projection_bias")
    return TextItems(json.loads(str(arrays["ids"])), arrays["vectors"].astype(np.float32),
                     str(arrays["encoder"]),
                     None if weight is None else weight.astype(np.float32),
                     None if bias is None else bias.astype(np.float32))


# -- files -----------------------------------------------------------------------------------------


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise RunDirError(f"cannot read {path} ({exc}); re-train") from None


def _read_json(path: Path, default: Any) -> Any:
    if not path.is_file():
        if default is None:
            raise RunDirError(f"{path} is missing")
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path} is not valid JSON ({exc}); re-train") from None


def _write_json(path: Path, doc: Any) -> None:
    _atomic(path, lambda p: p.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8"))


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object keeps numpy from appending ".npz"
        np.savez(f, **arrays)


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Call `write(tmp)` then rename tmp over `path`: a crash never leaves half a file."""
    with atomic_path(path) as tmp:
        write(tmp)
