"""Model registry: `ModelConfig.kind` -> the `RelationalModel` class that implements it.

The one place that maps a configuration to code, used by the trainer, the exporter and any
loader that rebuilds a model from a manifest's `ModelConfig`.
"""

from __future__ import annotations

from models.adacml import AdaCML
from models.base import RelationalModel
from models.cml import CML
from models.config import ModelConfig
from models.hlr import HLR, HLRPlusPlus
from models.lrml import LRML
from models.serml import SERML

MODELS: dict[str, type[RelationalModel]] = {
    "cml": CML,
    "lrml": LRML,
    "hlr": HLR,
    "hlr++": HLRPlusPlus,
    "adacml": AdaCML,
    "serml": SERML,
}


def build_model(cfg: ModelConfig, n_users: int, n_items: int) -> RelationalModel:
    """A freshly initialised model of kind `cfg.kind` over `n_users` x `n_items` rows."""
    return MODELS[cfg.kind](cfg, n_users, n_items)
