"""DELETE /users/{user_id}: erase a user's posted history and log entries (thin; `ingest`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from service.deps import EraseKeyDep, IngestDep
from service.errors import error_responses
from service.routes import recommend as _recommend  # noqa: F401 - registers the `any` convertor
from service.schemas import ID_PATTERN, ErasureResponse

router = APIRouter(prefix="/users", tags=["users"])

UserId = Annotated[
    str, Path(min_length=1, pattern=ID_PATTERN, description="external user id ('/' as %2F)")
]


@router.delete(
    "/{user_id:any}",
    response_model=ErasureResponse,
    responses=error_responses(401, 422, 503),
)
def erase_user(user_id: UserId, service: IngestDep, _: EraseKeyDep) -> ErasureResponse:
    """Remove the user's posted history, their entries of the durable interaction log and their
    event-id markers, so that the next `relrec export-interactions` (and the training run it
    feeds) has nothing of theirs; the counts say what was removed (zeros: nothing was stored).
    What the serving model learnt from them before stays until a version trained without
    them is served (docs/security.md, "Erasure")."""
    return service.erase(user_id)
