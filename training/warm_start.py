"""Warm start: begin a relational model from the tables of a run trained on the same data.

Stage: between the model and the trainer. A history model (HLR, HLR++) costs 5–50× a CML step,
and on every data set measured CML with the sampled softmax converges to a better optimum than
HLR reaches from a random start (docs/benchmarks.md, issue 15). Starting HLR from a converged
CML run asks a narrower question — does the relation add anything on top of the metric CML
found? — at the cost of a few HLR epochs. Parameters are copied by name and shape (the user and
item tables; K and M too when the source has them). A relation memory the source lacks starts at
zero, so that the warm-started model scores exactly like its source before its first step: the
relation then grows only where the loss asks for it (K gets its first gradient once M moves).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from models.base import RelationalModel
from training.config import ConfigError
from training.interactions import Interactions
from training.run_dir import RunDirError, load_run

log = logging.getLogger(__name__)

__all__ = ["warm_start"]


def warm_start(model: RelationalModel, run_dir: str | Path, train: Interactions) -> list[str]:
    """Copy the run's matching parameters into `model` in place; returns their names.

    Refuses (ConfigError) a run whose users or items are not the same rows as `train`'s: the
    same data, filters and split seed give the same id maps, anything else would start every
    user from somebody else's vector.
    """
    try:
        source = load_run(run_dir)
    except RunDirError as exc:
        raise ConfigError(f"trainer.init_from: {exc}") from None
    if source.model is None:
        raise ConfigError(f"trainer.init_from: {run_dir} holds a baseline, not a relational "
                          f"model: warm-start from a CML, LRML, AdaCML or HLR run")
    _check_same_rows(source.train, train, run_dir)
    copied = _copy_matching(model, source.model)
    if not copied:
        raise ConfigError(f"trainer.init_from: no parameter of {run_dir} "
                          f"({source.model.config.kind}, d={source.model.config.dim}) fits a "
                          f"{model.config.kind} model with d={model.config.dim}")
    zeroed = _zero_new_memories(model, copied)
    log.info("warm start from %s (%s): copied %s; zeroed %s", run_dir,
             source.model.config.kind, ", ".join(copied), ", ".join(zeroed) or "nothing")
    return copied


def _check_same_rows(source: Interactions, train: Interactions, run_dir: str | Path) -> None:
    for what, a, b in (("users", source.users, train.users), ("items", source.items, train.items)):
        if a.to_list() != b.to_list():
            raise ConfigError(f"trainer.init_from: {run_dir} was trained on other {what} "
                              f"({len(a)} against {len(b)} here, or another order): warm-start "
                              f"from a run on the same data, filters and split seed")


def _copy_matching(model: RelationalModel, source: RelationalModel) -> list[str]:
    target = model.state_dict()
    copied = []
    with torch.no_grad():
        for name, value in source.state_dict().items():
            if name in target and target[name].shape == value.shape:
                target[name].copy_(value)
                copied.append(name)
    return copied


def _zero_new_memories(model: RelationalModel, copied: list[str]) -> list[str]:
    """M of every relation memory the source did not provide: the relation starts at zero."""
    zeroed = []
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("memories") and name not in copied:
                param.zero_()
                zeroed.append(name)
    return zeroed
