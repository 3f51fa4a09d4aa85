"""GET /model: which model version serves, and what it is (thin; `Versions.describe`)."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import ReadKeyDep, VersionsDep
from service.schemas import ErrorResponse, ModelResponse

router = APIRouter(tags=["model"])


@router.get(
    "/model",
    response_model=ModelResponse,
    responses={code: {"model": ErrorResponse} for code in (401, 503)},
)
async def model(versions: VersionsDep, _: ReadKeyDep) -> ModelResponse:
    """The serving version: model kind, hyper-parameters, counts, evaluation metrics, when it
    was created, and the relrec versions that trained and serve it."""
    return versions.describe()
