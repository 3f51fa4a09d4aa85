"""Request and response models of `POST /interactions` (one interaction or a batch).

Apart from `service.schemas` because a batch is validated element by element: the body is a
discriminated union of one `InteractionIn` or an `InteractionsRequest` whose elements the route
checks one at a time, so that one bad element rejects only itself.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictFloat,
    Tag,
    WithJsonSchema,
    field_validator,
)

from service.schemas import Id

__all__ = [
    "InteractionIn",
    "InteractionsBody",
    "InteractionsRequest",
    "InteractionsResponse",
    "RejectedInteraction",
    "UnknownItemInteraction",
]


# pydantic reads a JSON number as epoch seconds only within ±2e10 (beyond, as milliseconds), so
# the schema admits numbers in that range and date-time strings: what the model really accepts.
Timestamp = Annotated[datetime, WithJsonSchema({"anyOf": [
    {"type": "number", "minimum": -2e10, "maximum": 2e10, "description": "epoch seconds"},
    {"type": "string", "format": "date-time"},
]})]


class InteractionIn(BaseModel):
    """One interaction; `event_id` makes a retry idempotent (unique per user)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"user_id": "u1", "item_id": "i42", "timestamp": 1700000000, "event_id": "e-1"},
                {"user_id": "u1", "item_id": "i7", "type": "negative"},
            ]
        },
    )

    user_id: Id
    item_id: Id
    timestamp: Timestamp | None = Field(
        None, description="epoch seconds or ISO 8601 (UTC when no zone); default: now"
    )
    # Strict: a boolean or a numeric string is not a weight (JSON numbers, ints included, are).
    # > 0: a weight is how strongly the interaction counts as a positive (the rating the next
    # training run thresholds, or ALS's confidence); zero or negative would be read as a
    # positive online while meaning "dislike", so it is refused (issue 16).
    weight: StrictFloat = Field(
        1.0,
        gt=0,
        le=1e6,
        allow_inf_nan=False,
        description="a finite number > 0 (default 1): the rating or strength of this "
        "positive; training thresholds it like a rating (or uses it as ALS confidence), "
        "serving counts every accepted interaction as seen and as history alike",
    )
    event_id: Id | None = None
    type: Literal["positive", "negative"] = Field(
        "positive",
        description="positive (default): history, as a like, a view, a purchase; negative: the "
        "user rejected the item, which is never recommended to them again (while the store "
        "holds it) and is kept in the durable log for training",
    )

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # Any date-time the schema admits is stored (as epoch seconds, negative before 1970):
        # the log keeps what the client said; the training readers decide what to use.
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def epoch_seconds(self, now: float) -> int:
        return int(self.timestamp.timestamp()) if self.timestamp else int(now)


_BATCH_ELEMENT: dict[str, Any] = {
    "anyOf": [
        {"$ref": "#/components/schemas/InteractionIn"},
        {"description": "any other value: rejected alone, listed in `rejected`"},
    ]
}


class InteractionsRequest(BaseModel):
    """A batch: each element is validated on its own, so one bad element rejects only itself."""

    model_config = ConfigDict(extra="forbid")

    # Typed Any so that a malformed element is rejected alone (in the route), not the batch;
    # documented as what it is: an InteractionIn, or anything else, which lands in `rejected`
    # (so that the document does not call a partial success a schema violation).
    interactions: list[Annotated[Any, WithJsonSchema(_BATCH_ELEMENT)]] = Field(min_length=1)


def _body_kind(value: Any) -> str:
    if isinstance(value, dict) and "interactions" in value:
        return "batch"
    if isinstance(value, BaseModel):
        return "batch" if isinstance(value, InteractionsRequest) else "one"
    return "one"


InteractionsBody = Annotated[
    Annotated[InteractionIn, Tag("one")] | Annotated[InteractionsRequest, Tag("batch")],
    Discriminator(_body_kind),
]


class RejectedInteraction(BaseModel):
    index: int = Field(description="position in the batch")
    item_id: str | None
    code: str = Field(description="invalid_input")
    message: str


class UnknownItemInteraction(BaseModel):
    """An accepted interaction whose item the serving version does not know (issue 16)."""

    index: int = Field(description="position in the batch (0 for a single interaction)")
    item_id: str
    code: Literal["unknown_item"] = "unknown_item"


class InteractionsResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"accepted": 2, "duplicates": 0, "rejected": [], "unknown_items": []}]
        }
    )

    accepted: int = Field(description="interactions stored, retries of stored ones included")
    duplicates: int = Field(0, description="of `accepted`, event ids already stored")
    rejected: list[RejectedInteraction] = Field(
        default_factory=list, description="invalid input, not stored"
    )
    unknown_items: list[UnknownItemInteraction] = Field(
        default_factory=list,
        description="of `accepted`: items this model version does not know. They are in the "
        "durable log (so the next training run learns them) and are served from the next "
        "version on; until then they do not shape this user's recommendations",
    )
