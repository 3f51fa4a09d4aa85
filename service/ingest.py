"""Ingest: posted interactions -> history store (the write half of `POST /interactions`).

Validates each interaction on its own (schema, id bounds, weight > 0), stores the valid ones in
one store call and reports the rest. A batch is a partial success (STYLE "Errors": nothing valid
is dropped, each rejection says why); a single invalid interaction is an error of the request
(422). An item the serving version does not know is *valid*: the catalogue grows between
training runs, so the interaction is stored (the durable log feeds the next run, which learns
the item) and reported in `unknown_items`; the recommender ignores rows it cannot resolve, so
the item shapes recommendations from the first version that knows it (issue 16).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from models.idmap import IdMap
from service.errors import InvalidInputError, StoreUnavailableError, validation_message
from service.history import Event, HistoryStore
from service.interaction_schemas import (
    InteractionIn,
    InteractionsBody,
    InteractionsResponse,
    RejectedInteraction,
    UnknownItemInteraction,
)
from service.limits import Limits
from service.metrics import Metrics
from service.schemas import ErasureResponse

__all__ = ["IngestService", "ingest"]

_ADAPTER: TypeAdapter[InteractionIn] = TypeAdapter(InteractionIn)


class IngestService:
    """What `POST /interactions` and `DELETE /users` may do: check bounds, store or erase,
    count in /metrics."""

    def __init__(
        self,
        limits: Limits,
        store: Callable[[], HistoryStore],
        item_ids: Callable[[], IdMap],
        metrics: Metrics,
    ) -> None:
        self.limits = limits
        self.store = store
        self.item_ids = item_ids  # of the serving version, read per request
        self.metrics = metrics

    def post(self, body: InteractionsBody) -> InteractionsResponse:
        """One interaction (an error of its own is the request's) or a batch (partial)."""
        single = isinstance(body, InteractionIn)
        entries: list[Any] = [body] if isinstance(body, InteractionIn) else body.interactions
        self.limits.check_batch(len(entries))
        item_ids = self.item_ids()
        try:
            result = ingest(
                entries,
                single=single,
                item_ids=item_ids,
                store=self.store(),
                limits=self.limits,
                now=time.time(),
            )
        except StoreUnavailableError:
            self.metrics.store_errors.labels("append").inc()
            raise
        m = self.metrics.interactions
        m.labels("stored").inc(result.accepted - result.duplicates)
        m.labels("duplicate").inc(result.duplicates)
        m.labels("rejected").inc(len(result.rejected))
        m.labels("unknown_item").inc(len(result.unknown_items))  # of the stored ones
        return result

    def erase(self, user_id: str) -> ErasureResponse:
        """Remove the user's posted history and durable-log entries; zeros when the store
        holds nothing of theirs (a retried DELETE answers the same way)."""
        self.limits.check_id("user_id", user_id)
        try:
            erased = self.store().erase(user_id)
        except StoreUnavailableError:
            self.metrics.store_errors.labels("erase").inc()
            raise
        return ErasureResponse(
            user_id=user_id,
            history_removed=erased.history,
            log_removed=erased.log,
            markers_removed=erased.markers,
        )


def ingest(
    entries: Sequence[Any],
    *,
    single: bool,
    item_ids: IdMap,
    store: HistoryStore,
    limits: Limits,
    now: float,
) -> InteractionsResponse:
    """Validate `entries` (InteractionIn or raw JSON values), store the valid ones."""
    result = InteractionsResponse(accepted=0, duplicates=0)
    events: list[Event] = []
    for i, raw in enumerate(entries):
        try:
            event = _to_event(raw, limits, now)
        except InvalidInputError as exc:
            if single:
                raise
            result.rejected.append(
                RejectedInteraction(
                    index=i, item_id=_item_id_of(raw), code=exc.code, message=exc.message
                )
            )
            continue
        events.append(event)
        if event.item_id not in item_ids:
            result.unknown_items.append(UnknownItemInteraction(index=i, item_id=event.item_id))
    if events:
        new = store.append(events)
        result.accepted = len(events)
        result.duplicates = new.count(False)
    return result


def _to_event(raw: Any, limits: Limits, now: float) -> Event:
    if isinstance(raw, InteractionIn):
        one = raw
    else:
        try:
            one = _ADAPTER.validate_python(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            message = validation_message(err["loc"], err["msg"], err["type"])
            raise InvalidInputError(message) from None
    for name in ("user_id", "item_id", "event_id"):
        limits.check_id(name, getattr(one, name))
    return Event(
        one.user_id, one.item_id, one.epoch_seconds(now), one.weight, one.event_id, one.type
    )


def _item_id_of(raw: Any) -> str | None:
    if isinstance(raw, InteractionIn):
        return raw.item_id
    if isinstance(raw, dict) and isinstance(raw.get("item_id"), str):
        # Echoed in the reply: lone surrogates (valid in JSON text, not in UTF-8) are escaped.
        return str(raw["item_id"])[:256].encode("utf-8", "backslashreplace").decode("utf-8")
    return None
