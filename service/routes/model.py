"""GET /model: which model version serves, and what it is (thin; `Versions.describe`)."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import ReadKeyDep, VersionsDep
from service.errors import error_responses
from service.schemas import ModelResponse

router = APIRouter(tags=["model"])


@router.get(
    "/model",
    response_model=ModelResponse,
    responses=error_responses(401, 503),
)
async def model(versions: VersionsDep, _: ReadKeyDep) -> ModelResponse:
    """The serving version: model kind, hyper-parameters, counts, evaluation metrics, when it
    was created, and the relrec versions that trained and serve it."""
    return versions.describe()
