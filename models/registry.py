"""Model registry: the one table of model kinds, `ModelConfig.kind` -> everything about a kind.

Each kind names its `RelationalModel` class, the builder of its ONNX scoring graph
(`models/graphs.py`) and the facts the rest of the code branches on: whether its relation
reads the user's history, whether it has an LRAM memory (K, M: tuned `n_memory`, relation
discovery from item text). Every other list of kinds is derived from `KINDS` (ModelConfig's
validator, `training.config.RELATIONAL`, `training.tune.MEMORY_KINDS`, ...).

The classes are named as "module:attribute" strings and imported on first use, so that this
module imports no torch: `models/config.py` (read by the service) validates kinds against it.
A test or a plug-in adds a kind with `register` (objects instead of strings are fine).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.base import RelationalModel
    from models.config import ModelConfig
    from models.graphs import ScorerGraph

__all__ = ["KINDS", "ModelSpec", "build_model", "build_scorer_graph", "history_kinds",
           "memory_kinds", "model_class", "register", "spec", "unregister"]


@dataclass(frozen=True)
class ModelSpec:
    """One model kind. `model` and `graph` are objects or "module:attribute" strings."""

    model: type[RelationalModel] | str  # (cfg, n_users, n_items) -> RelationalModel
    graph: Callable[..., ScorerGraph] | str  # (model, shift="auto") -> ScorerGraph
    uses_history: bool = False  # the relation reads the user's history N_u (DESIGN §1)
    has_memory: bool = False  # an LRAM (K, M): n_memory tuned, relation discovery (LRD)
    item_text_lrd: bool = False  # trains LRD on item text (training/text/items.py)


KINDS: dict[str, ModelSpec] = {
    "cml": ModelSpec("models.cml:CML", "models.graphs:cml_graph"),
    "lrml": ModelSpec("models.lrml:LRML", "models.graphs:lrml_graph", has_memory=True),
    "hlr": ModelSpec("models.hlr:HLR", "models.graphs:hlr_graph", uses_history=True,
                     has_memory=True, item_text_lrd=True),
    "hlr++": ModelSpec("models.hlr:HLRPlusPlus", "models.graphs:hlr_plus_graph",
                       uses_history=True, has_memory=True, item_text_lrd=True),
    "adacml": ModelSpec("models.adacml:AdaCML", "models.graphs:adacml_graph",
                        uses_history=True),
    # SERML serves LRML's relation (models/serml.py)
    "serml": ModelSpec("models.serml:SERML", "models.graphs:lrml_graph", has_memory=True),
}


def register(kind: str, model_spec: ModelSpec) -> None:
    """Add a model kind (e.g. a test's toy model); an existing kind is an error."""
    if kind in KINDS:
        raise ValueError(f"model kind {kind!r} is already registered")
    KINDS[kind] = model_spec


def unregister(kind: str) -> None:
    """Remove a kind added by `register`."""
    del KINDS[kind]


def spec(kind: str) -> ModelSpec:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}") from None


def history_kinds() -> frozenset[str]:
    return frozenset(k for k, s in KINDS.items() if s.uses_history)


def memory_kinds() -> tuple[str, ...]:
    return tuple(k for k, s in KINDS.items() if s.has_memory)


def _resolve(target: Any) -> Any:
    if not isinstance(target, str):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def model_class(kind: str) -> type[RelationalModel]:
    return _resolve(spec(kind).model)


def build_model(cfg: ModelConfig, n_users: int, n_items: int) -> RelationalModel:
    """A freshly initialised model of kind `cfg.kind` over `n_users` x `n_items` rows."""
    return model_class(cfg.kind)(cfg, n_users, n_items)


def build_scorer_graph(model: RelationalModel, shift: str = "auto") -> ScorerGraph:
    """The scorer graph of `model`'s kind, holding copies of its tables (float32, CPU, eval).

    `shift` matters to HLR/HLR++ only: "auto" picks the cheap bound shift when `shift_bound`
    is within SAFE_SHIFT (models/graphs.py), else "bound" or "max".
    """
    kind = model.config.kind
    if kind not in KINDS:
        raise ValueError(f"no scorer graph for model kind {kind!r}")
    return _resolve(KINDS[kind].graph)(model, shift).eval()
