"""Request and response models of the HTTP API (and so of its OpenAPI document).

Ids are non-empty text without control characters; their length bound is a setting
(`max_id_length`, at most `ID_MAX`) that `service.limits.Limits` checks, in one place for
every route. Responses are what clients parse: fields are documented and stable.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
)

__all__ = [
    "ErrorBody",
    "ErasureResponse",
    "ErrorResponse",
    "ExplainItem",
    "ModelResponse",
    "PartStatus",
    "ReadyResponse",
    "RecommendBatchResponse",
    "RecommendRequest",
    "RecommendResponse",
    "UnknownFilterId",
    "RecommendedItem",
    "ReloadResponse",
    "SimilarResponse",
    "Source",
]

Source = Literal["personalized", "history", "popular", "training_only"]

ID_MAX = 4096
# No control characters, C0 or C1, nor line/paragraph separators (they break logs and
# line-oriented exports), nor U+FFFD (what a non-UTF-8 byte in the URL decodes to, so that
# mangled ids are refused rather than merged); anything else is opaque.
ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029\ufffd]+$"
Id = Annotated[str, Field(min_length=1, pattern=ID_PATTERN)]


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable, e.g. unknown_item, invalid_input")
    message: str
    details: list[Any] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    """The one shape of every error the service answers."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "unknown_item",
                        "message": "item 'x' is not in model version 20260101T000000Z-abc123",
                        "details": [],
                    },
                    "request_id": "5f0c3e9a1b2c4d5e6f708192a3b4c5d6",
                }
            ]
        }
    )

    error: ErrorBody
    request_id: str | None = None


class ExplainItem(BaseModel):
    """A history item the recommendation rests on: without it the item moves away by `delta`."""

    item_id: str
    weight: float = Field(
        description="this history item's share of the distance increases when each history "
        "item is left out in turn, in (0, 1]: how much the recommendation rests on it"
    )
    delta: float = Field(
        description="increase of the model's distance to the recommended item when this "
        "history item is left out (the user vector re-fitted for a `history` user)"
    )


SCORE_DOC = (
    "in [0, 1], higher is better, one meaning for every source: for the model's sources "
    "(personalized, history, training_only with a vector) 1 / (1 + exp(distance)), a "
    "decreasing function of the model's distance, so scores of one model version compare "
    "across users and requests; for `popular`, the share of training users who interacted "
    "with the item (popularity / users). Rank by it; do not threshold it as a probability"
)


class RecommendedItem(BaseModel):
    item_id: str
    score: float = Field(description=SCORE_DOC)
    distance: float | None = Field(
        None,
        description="the model's distance between the user and the item (smaller is "
        "better: squared distance for the metric models, minus the inner product for ALS); "
        "null for `popular`",
    )
    popularity: int = Field(description="training interactions of the item")
    because: list[ExplainItem] | None = Field(
        None,
        description="with explain=true: up to 3 history items the recommendation rests on, "
        "most first (empty for `popular`, or when no history item pulls it in)",
    )


class UnknownFilterId(BaseModel):
    """An id in `exclude` or `candidates` that the serving version does not know: ignored."""

    filter: Literal["exclude", "candidates"]
    item_id: str
    code: Literal["unknown_item"] = "unknown_item"


class RecommendResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "u1",
                    "model_version": "20260101T000000Z-abc123",
                    "source": "personalized",
                    "items": [
                        {
                            "item_id": "i42",
                            "score": 0.31,
                            "distance": 0.8,
                            "popularity": 120,
                            "because": None,
                        }
                    ],
                    "unknown_ids": [],
                }
            ]
        }
    )

    user_id: str
    model_version: str
    source: Source = Field(
        description="personalized: trained user vector; history: vector "
        "built from the user's history; popular: no history; training_only: the history "
        "store is unavailable, so the answer uses the artifact's training history alone "
        "(trained vector, else popular items)"
    )
    items: list[RecommendedItem]
    unknown_ids: list[UnknownFilterId] = Field(
        default_factory=list,
        description="ids of `exclude` or `candidates` this model version does not know; "
        "ignored, not an error",
    )


CANDIDATES_DOC = (
    "rank only among these item ids: all scored exactly up to RELREC_SELECTOR_MIN_CANDIDATES "
    "ids, the C nearest of a longer list (a FAISS id selector)"
)


class RecommendRequest(BaseModel):
    """Batch recommend: the same k and filters for every user, computed as one micro-batch."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"users": ["u1", "u2"], "k": 10, "exclude": ["i7"], "offset": 0}]
        },
    )

    users: list[Id] = Field(min_length=1, description="at most RELREC_MAX_RECOMMEND_USERS")
    k: int = Field(10, ge=1, description="items per user (at most RELREC_MAX_K)")
    offset: int = Field(0, ge=0, description="ranks to skip, for paging (at most RELREC_MAX_K)")
    explain: StrictBool = False
    exclude: list[Id] = Field(default_factory=list, description="item ids never to return")
    candidates: list[Id] | None = Field(None, description=CANDIDATES_DOC)

    @field_validator("k", "offset", mode="before")
    @classmethod
    def _json_integer(cls, value: Any) -> Any:
        # What JSON Schema calls an integer (2, or 2.0), not `false` or "2": pydantic's lax
        # int would read those too, and a body should say what it means.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a JSON integer")
        return value


class SimilarResponse(BaseModel):
    """An item's nearest items in the model's metric (itself excluded), nearest first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "item_id": "i7",
                    "model_version": "20260101T000000Z-abc123",
                    "items": [
                        {
                            "item_id": "i42",
                            "score": 0.31,
                            "distance": 0.8,
                            "popularity": 120,
                            "because": None,
                        }
                    ],
                }
            ]
        }
    )

    item_id: str
    model_version: str
    items: list[RecommendedItem] = Field(
        description="`score` and `distance` as in recommendations, between the two items"
    )


class RecommendBatchResponse(BaseModel):
    results: list[RecommendResponse] = Field(description="one per user, in the request's order")


class ModelResponse(BaseModel):
    """The serving model version, as its manifest describes it."""

    version: str
    kind: str = Field(description="cml, lrml, hlr, hlr++, adacml, serml, als or pop")
    hyperparameters: dict[str, Any] = Field(description="the model's configuration (dim, ...)")
    counts: dict[str, int] = Field(description="users, items and training interactions")
    metrics: dict[str, Any] = Field(description="evaluation metrics recorded at export")
    created_at: datetime
    trained_with: str = Field(description="relrec version that exported the model")
    served_by: str = Field(description="relrec version of this server")
    l_max: int = Field(description="history items the model reads per user")
    index: dict[str, Any] = Field(description="FAISS factory, metric, search params, recall@C")
    fold_in: str = Field(description="how a user known only by posted history gets a vector")
    refit: bool = Field(description="trained on every interaction after model selection")


class ErasureResponse(BaseModel):
    """What DELETE /users/{user_id} removed from the history store (docs/security.md)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"user_id": "u1", "history_removed": 12, "log_removed": 14, "markers_removed": 3}
            ]
        }
    )

    user_id: str
    history_removed: int = Field(description="items of the user's online history")
    log_removed: int = Field(description="entries of the durable interaction log")
    markers_removed: int = Field(description="event-id markers (Redis)")


class PartStatus(BaseModel):
    ready: bool
    detail: str | None = None
    version: str | None = None


class ReadyResponse(BaseModel):
    status: Literal["ready", "not_ready"]
    parts: dict[str, PartStatus]


class ReloadResponse(BaseModel):
    version: str
    previous: str | None
    changed: bool


class ItemPutRequest(BaseModel):
    """PUT /items/{item_id}: the item's text (title, description, tags), which places it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "Heat (1995) Action|Crime|Thriller"}]},
    )

    # strict: a number or a list is not text; the length bound is RELREC_MAX_ITEM_TEXT_CHARS
    text: Annotated[str, Field(min_length=1, strict=True)]


class ItemResponse(BaseModel):
    """The item as the serving version now has it: placed (hidden false) or hidden."""

    item_id: str
    model_version: str
    hidden: bool
