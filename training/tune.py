"""Hyper-parameter search: the stage before `relrec train` that picks a config on validation.

Reads a base `TrainConfig` (the data, and every key the search leaves alone), runs an Optuna
study (TPE sampler, median pruning on the per-epoch validation score that the trainer reports
through its `on_epoch` hook) over one split, and writes under the out dir: `study.db` (sqlite,
so that the same command resumes the study), `trials.jsonl` (one line per finished trial) and
`best.toml`, the best trial's config (its [model] and [trainer], or [baseline]), which
`relrec train --config` reads. Selection uses the validation split only; the test split is
never scored.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from models import registry
from training.config import RELATIONAL, ConfigError, TrainConfig
from training.splits import Split

__all__ = ["fixed_keys", "search_space", "to_toml", "tune"]

log = logging.getLogger(__name__)

MEMORY_KINDS = registry.memory_kinds()  # the models with K and M
BEST_FILE = "best.toml"
# sections of the best config (the data come from the command line of `relrec train`)
RELATIONAL_SECTIONS = ("model", "trainer")
BASELINE_SECTIONS = ("baseline",)
# where and how verbosely to run, not what to train: left to the machine that trains
MACHINE_KEYS = {"trainer": ("device", "threads", "progress", "prefetch", "compile", "seed")}


def search_space(trial: Any, algorithm: str,
                 fixed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`section.key` -> value suggested by `trial` for `algorithm` (the docs list the ranges).

    Relational models: lr, margin, dim, batch size, and the negatives (`hardest` and `warp`
    pick among several, so n_negatives 1 is read as 2 there: one distribution per name keeps
    TPE's model of it whole); memory models also N and an optional separate lr for K and M.
    A key in `fixed` (key -> the base config's value; what `--set` names on the command line)
    is left out of the search, so a small budget is spent only on what is still open.
    """
    fixed = fixed or {}
    return {key: value for key, value in _suggest(trial, algorithm, fixed).items()
            if key not in fixed}


def _suggest(trial: Any, algorithm: str, fixed: Mapping[str, Any]) -> dict[str, Any]:
    def open_(*keys: str) -> bool:
        return not all(k in fixed for k in keys)

    params: dict[str, Any] = {}
    if algorithm == "als":
        if open_("baseline.factors"):
            params["baseline.factors"] = trial.suggest_categorical("factors", [64, 100, 200, 300])
        if open_("baseline.regularization"):
            params["baseline.regularization"] = trial.suggest_float("regularization", 1.0,
                                                                    1000.0, log=True)
        if open_("baseline.alpha"):
            params["baseline.alpha"] = trial.suggest_float("alpha", 0.1, 100.0, log=True)
        return params
    if algorithm == "ease":
        if open_("baseline.ease_l2"):
            params["baseline.ease_l2"] = trial.suggest_float("ease_l2", 1.0, 1e5, log=True)
        return params
    if algorithm not in RELATIONAL:
        raise ConfigError(f"{algorithm} has no hyper-parameters to tune")
    if open_("trainer.lr"):
        params["trainer.lr"] = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    if open_("model.margin"):
        params["model.margin"] = trial.suggest_float("margin", 0.1, 1.0)
    if open_("model.dim"):
        params["model.dim"] = trial.suggest_categorical("dim", [50, 100, 200])
    if open_("trainer.batch_size"):
        params["trainer.batch_size"] = trial.suggest_categorical("batch_size", [256, 500, 1000])
    # SERML's objective reads one negative (training/trainer.py)
    if algorithm != "serml" and open_("trainer.negatives", "trainer.n_negatives"):
        negatives = (trial.suggest_categorical("negatives", ["uniform", "hardest", "warp", "mean",
                                                             "softmax"])
                     if open_("trainer.negatives") else fixed["trainer.negatives"])
        n = (trial.suggest_int("n_negatives", 1, 20) if open_("trainer.n_negatives")
             else fixed["trainer.n_negatives"])
        params["trainer.negatives"] = negatives
        params["trainer.n_negatives"] = (max(n, 2) if negatives in ("hardest", "warp", "softmax")
                                         else n)
        if negatives == "softmax" and open_("trainer.temperature"):
            params["trainer.temperature"] = trial.suggest_float("temperature", 0.02, 1.0, log=True)
    if algorithm in MEMORY_KINDS:
        if open_("model.n_memory"):
            params["model.n_memory"] = trial.suggest_categorical("n_memory", [5, 10, 20, 50])
        if open_("trainer.lr_memory") and trial.suggest_categorical("separate_lr_memory",
                                                                    [False, True]):
            params["trainer.lr_memory"] = trial.suggest_float("lr_memory", 1e-5, 1e-2, log=True)
    return params


def fixed_keys(base: TrainConfig, overrides: list[str]) -> dict[str, Any]:
    """`section.key` -> `base`'s value for every `section.key=value` override: what the user
    pinned on the command line, which the search then leaves alone."""
    keys = {item.split("=", 1)[0].strip() for item in overrides if "=" in item}
    return {key: getattr(getattr(base, key.split(".")[0]), key.split(".")[1])
            for key in keys if key.count(".") == 1
            and hasattr(getattr(base, key.split(".")[0], None), key.split(".")[1])}


def with_params(base: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """The base config with `section.key` values set, validated again."""
    tree = base.model_dump(mode="json")
    for dotted, value in params.items():
        section, key = dotted.split(".")
        tree[section][key] = value
    return TrainConfig.model_validate(tree)


def validation_score(cfg: TrainConfig, split: Split,
                     report: Callable[[int, float], None]) -> tuple[float, dict[str, Any]]:
    """Validation NDCG@k of `cfg` (the relational models' best epoch) and what to keep of it."""
    from training.evaluator import full_ranking
    from training.pipeline import fit_baseline, fit_relational

    if not cfg.is_relational:
        fitted = fit_baseline(cfg, split.train)
        means = full_ranking(fitted, split, k=cfg.eval.k, stage="valid",
                             batch_size=cfg.eval.batch_size, progress=False).means()
        return means["ndcg"], {}
    _, _, result = fit_relational(cfg, split, on_epoch=lambda e: report(e.epoch, e.valid))
    return result.best_valid, {"best_epoch": result.best_epoch, "epochs": len(result.epochs),
                               "curve": [round(e.valid, 6) for e in result.epochs]}


def make_objective(base: TrainConfig, split: Split,
                   fixed: Mapping[str, Any] | None = None) -> Callable[[Any], float]:
    import optuna

    def objective(trial: optuna.Trial) -> float:
        params = search_space(trial, base.algorithm, fixed)
        trial.set_user_attr("config", params)

        def report(epoch: int, value: float) -> None:
            trial.set_user_attr("epochs", epoch)  # kept for a pruned trial too
            if math.isfinite(value):
                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"validation {value:.4f} at epoch {epoch}")

        value, kept = validation_score(with_params(base, params), split, report)
        for key, item in kept.items():
            trial.set_user_attr(key, item)
        return value

    return objective


def to_toml(cfg: TrainConfig, header: str = "") -> str:
    """`algorithm` and its sections as TOML: [model] and [trainer] for the relational models,
    [baseline] for ALS and EASE (scalars and lists only).

    TOML has no null: a None is left out, which is right only where None is the default.
    """
    tree = cfg.model_dump(mode="json")
    lines = [f"# {line}" for line in header.splitlines()]
    lines.append(f"algorithm = {_value(cfg.algorithm)}")
    for section in RELATIONAL_SECTIONS if cfg.is_relational else BASELINE_SECTIONS:
        values = tree.get(section)
        if values is None:
            continue
        lines += ["", f"[{section}]"]
        for key, value in values.items():
            if key in MACHINE_KEYS.get(section, ()):
                continue
            if value is None:
                if _default(cfg, section, key) is not None:
                    raise ConfigError(f"{section}.{key} is None; TOML cannot say so")
                continue
            lines.append(f"{key} = {_value(value)}")
    return "\n".join(lines) + "\n"


def _default(cfg: TrainConfig, section: str, key: str) -> Any:
    return type(getattr(cfg, section)).model_fields[key].default


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else
                                                         ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} as TOML")


def _finish_stale(study: Any) -> None:
    """A trial left RUNNING by an interrupted run will never report: mark it failed."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)


def _record(out: Path, base: TrainConfig, header: str) -> Callable[[Any, Any], None]:
    """Study callback: log the finished trial and rewrite best.toml, so a kill loses nothing."""
    from optuna.trial import TrialState

    def callback(study: Any, trial: Any) -> None:
        row = {"number": trial.number, "state": trial.state.name, "value": trial.value,
               "params": trial.params, **trial.user_attrs}
        with (out / "trials.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
            best = study.best_trial
            cfg = with_params(base, best.user_attrs["config"])
            note = f"{header}\nbest of trial {best.number}: validation NDCG {best.value:.4f}"
            (out / BEST_FILE).write_text(to_toml(cfg, note))

    return callback


def tune(base: TrainConfig, out_dir: str | Path, trials: int, split: Split | None = None,
         timeout_s: float | None = None, progress: bool = True, header: str = "",
         fixed: Mapping[str, Any] | None = None) -> Any:
    """Run (or resume) the study until it holds `trials` finished trials; returns the study.

    Finished = completed or pruned. The sampler is seeded with `trainer.seed`; the split is
    `base`'s (the same data and seed give the same split on resume). Keys in `fixed` keep
    `base`'s value and are not searched.
    """
    import optuna
    from optuna.trial import TrialState
    from tqdm.auto import tqdm

    from training.pipeline import prepare

    if base.algorithm not in (*RELATIONAL, "als", "ease"):
        raise ConfigError(f"{base.algorithm} has no hyper-parameters to tune")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split = split if split is not None else prepare(base)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=base.algorithm, storage=f"sqlite:///{(out / 'study.db').resolve()}",
        direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=base.trainer.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    _finish_stale(study)
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    bar = tqdm(total=trials, initial=min(done, trials), desc=f"tune {base.algorithm}",
               disable=not progress)

    def advance(study: Any, trial: Any) -> None:
        bar.update()
        if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
            bar.set_postfix(best=f"{study.best_value:.4f}")

    if done < trials:
        study.optimize(make_objective(base, split, fixed), n_trials=trials - done,
                       timeout=timeout_s,
                       callbacks=[_record(out, base, header), advance], gc_after_trial=True)
    bar.close()
    return study


def summary(study: Any) -> dict[str, Any]:
    """Counts per state and the best trial (what `relrec tune` prints)."""
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    doc: dict[str, Any] = {s.name.lower(): int(np.sum([x == s for x in states]))
                           for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    if doc["complete"]:
        doc.update(best_value=study.best_value, best_trial=study.best_trial.number,
                   best_params=study.best_params)
    return doc
