"""POST /interactions: one interaction or a batch; thin, `service.ingest` does the work."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import IngestDep, WriteKeyDep
from service.errors import error_responses
from service.interaction_schemas import InteractionsBody, InteractionsResponse

router = APIRouter(tags=["interactions"])

_ERRORS = error_responses(
    401,
    413,
    422,
    503,
    s413="the body over RELREC_MAX_BODY_BYTES, or more interactions than RELREC_MAX_BATCH",
)


@router.post("/interactions", response_model=InteractionsResponse, responses=_ERRORS)
def post_interactions(
    body: InteractionsBody, service: IngestDep, _: WriteKeyDep
) -> InteractionsResponse:
    """Append to users' histories and to the durable log.

    A batch `{"interactions": [...]}` is a partial success: valid interactions are stored,
    the others are listed in `rejected` (code invalid_input); a single invalid interaction is
    a 422. An item this model version does not know is stored too (the next training run
    learns it) and listed in `unknown_items`. Retries with the same `event_id` (per user) are
    stored once and counted in `duplicates`.
    """
    return service.post(body)
