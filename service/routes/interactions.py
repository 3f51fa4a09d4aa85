"""POST /interactions: one interaction or a batch; thin, `ingest` does the work."""

from __future__ import annotations

import time

from fastapi import APIRouter

from service.deps import RuntimeDep, WriteKeyDep
from service.errors import PayloadTooLargeError, StoreUnavailableError
from service.ingest import ingest
from service.schemas import (
    ErrorResponse,
    InteractionIn,
    InteractionsBody,
    InteractionsResponse,
    RejectedInteraction,
    UnknownItemInteraction,
)

router = APIRouter(tags=["interactions"])

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (401, 413, 422, 503)
}


@router.post("/interactions", response_model=InteractionsResponse, responses=_ERRORS)
def post_interactions(
    body: InteractionsBody, runtime: RuntimeDep, _: WriteKeyDep
) -> InteractionsResponse:
    """Append to users' histories and to the durable log.

    A batch `{"interactions": [...]}` is a partial success: valid interactions are stored,
    the others are listed in `rejected` (code invalid_input); a single invalid interaction is
    a 422. An item this model version does not know is stored too (the next training run
    learns it) and listed in `unknown_items`. Retries with the same `event_id` (per user) are
    stored once and counted in `duplicates`.
    """
    single = isinstance(body, InteractionIn)
    entries: list[object] = [body] if isinstance(body, InteractionIn) else body.interactions
    s = runtime.settings
    if len(entries) > s.max_batch:
        raise PayloadTooLargeError(
            f"{len(entries)} interactions in one request; the limit is "
            f"{s.max_batch} (RELREC_MAX_BATCH)"
        )
    engine = runtime.engine
    try:
        result = ingest(
            entries,
            single=single,
            item_ids=engine.artifact.arrays.item_ids,
            store=runtime.history_store(),
            max_id_length=s.max_id_length,
            now=time.time(),
        )
    except StoreUnavailableError:
        runtime.metrics.store_errors.labels("append").inc()
        raise
    m = runtime.metrics.interactions
    m.labels("stored").inc(result.accepted - result.duplicates)
    m.labels("duplicate").inc(result.duplicates)
    m.labels("rejected").inc(len(result.rejected))
    m.labels("unknown_item").inc(len(result.unknown_items))  # of the stored ones
    return InteractionsResponse(
        accepted=result.accepted,
        duplicates=result.duplicates,
        rejected=[
            RejectedInteraction(index=r.index, item_id=r.item_id, code=r.code, message=r.message)
            for r in result.rejected
        ],
        unknown_items=[
            UnknownItemInteraction(index=i, item_id=item_id) for i, item_id in result.unknown_items
        ],
    )
