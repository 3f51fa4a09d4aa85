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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from models.idmap import IdMap
from service.errors import InvalidInputError
from service.history import Event, HistoryStore
from service.schemas import InteractionIn

__all__ = ["IngestResult", "Rejection", "ingest"]

_ADAPTER: TypeAdapter[InteractionIn] = TypeAdapter(InteractionIn)


@dataclass(frozen=True)
class Rejection:
    index: int
    item_id: str | None
    code: str  # invalid_input
    message: str


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    unknown_items: list[tuple[int, str]] = field(default_factory=list)  # (index, item_id)


def ingest(
    entries: Sequence[Any],
    *,
    single: bool,
    item_ids: IdMap,
    store: HistoryStore,
    max_id_length: int,
    now: float,
) -> IngestResult:
    """Validate `entries` (InteractionIn or raw JSON values), store the valid ones."""
    result = IngestResult()
    events: list[Event] = []
    for i, raw in enumerate(entries):
        try:
            event = _to_event(raw, max_id_length, now)
        except InvalidInputError as exc:
            if single:
                raise
            result.rejected.append(Rejection(i, _item_id_of(raw), exc.code, exc.message))
            continue
        events.append(event)
        if event.item_id not in item_ids:
            result.unknown_items.append((i, event.item_id))
    if events:
        new = store.append(events)
        result.accepted = len(events)
        result.duplicates = new.count(False)
    return result


def _to_event(raw: Any, max_len: int, now: float) -> Event:
    if isinstance(raw, InteractionIn):
        one = raw
    else:
        try:
            one = _ADAPTER.validate_python(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise InvalidInputError(f"{where}: {err['msg']}" if where else err["msg"]) from None
    for name in ("user_id", "item_id", "event_id"):
        value = getattr(one, name)
        if value is not None and len(value) > max_len:
            raise InvalidInputError(f"{name} is longer than {max_len} characters")
    return Event(one.user_id, one.item_id, one.epoch_seconds(now), one.weight, one.event_id)


def _item_id_of(raw: Any) -> str | None:
    if isinstance(raw, InteractionIn):
        return raw.item_id
    if isinstance(raw, dict) and isinstance(raw.get("item_id"), str):
        # Echoed in the reply: lone surrogates (valid in JSON text, not in UTF-8) are escaped.
        return str(raw["item_id"])[:256].encode("utf-8", "backslashreplace").decode("utf-8")
    return None
