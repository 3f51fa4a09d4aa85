"""Model configuration: which relational model to build and its hyper-parameters.

Read by `models.registry.build_model`, stored whole in the artifact's `manifest.json` so that the
exporter and the loader can rebuild the model from it alone (nanoGPT keeps `model_args` in its
checkpoint). Pure pydantic, no torch, so that the service can read a manifest without torch.
"""

from __future__ import annotations

import warnings
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PositiveInt

from models import registry


def _known_kind(kind: str) -> str:
    registry.spec(kind)  # raises ValueError naming the known kinds
    return kind


# A kind of `models.registry.KINDS`, checked when validated (not a Literal: the table is the one
# list of kinds, and a test may register a kind after this module is imported).
ModelKind = Annotated[str, AfterValidator(_known_kind)]

# `copy` is the reference code's own name for the option (deezer/recsys21-hlr, LRML `copy`);
# it shadows the deprecated `BaseModel.copy`, which nobody here calls (use `model_copy`).
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "copy"', category=UserWarning)

    class ModelConfig(BaseModel):
        """Hyper-parameters of one relational model (DESIGN §1).

        `copy=True` is the original LRML training (the negative's distance reuses the positive's
        relation); `copy=False` computes the negative's own relation, as the HLR reference does
        by default. `clip_memory` also projects K's and M's rows into the unit ball after each
        step (reference `clip_ram`).
        """

        model_config = ConfigDict(extra="forbid")

        kind: ModelKind = Field(description="which relational model")
        dim: PositiveInt = Field(default=100, description="embedding dimension d")
        n_memory: PositiveInt = Field(default=20, description="memory slots N of the LRAM")
        l_max: PositiveInt = Field(default=50, description="history items read per user (L)")
        margin: float = Field(default=0.5, gt=0.0, description="hinge margin")
        copy: bool = Field(default=False, description="the negative reuses the positive's "
                           "relation (original LRML training)")
        clip_memory: bool = Field(default=False, description="project K's and M's rows into "
                                  "the unit ball after each step")
        history_sampling: Literal["uniform", "inverse_popularity"] = Field(
            default="uniform", description="how the L history items are drawn when a user has "
            "more")
        # Training only: each sampled history slot is hidden with this probability, so that the
        # relation cannot lean on any one history item (a regulariser; 0 is the reference).
        history_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="hide each "
                                       "training history slot with this probability")
        # SERML: weight γ of the semantic regression γ‖r(u, v) − s(u, v)‖² (0 is LRML exactly).
        gamma: float = Field(default=0.1, ge=0.0, description="serml: weight γ of the review "
                             "regression γ‖r − s‖² (0 is LRML)")

        @property
        def uses_history(self) -> bool:
            """Whether the model's relation reads the user's history (HLR, HLR++, AdaCML)."""
            return registry.spec(self.kind).uses_history
