"""Liveness and readiness: /healthz answers while the process runs; /readyz once it can serve."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import ReadinessDep
from service.errors import error_responses
from service.schemas import ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", responses=error_responses())
async def healthz() -> dict[str, str]:
    """Alive: the event loop answers. Never touches the store or the model."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    responses=error_responses(503, s503="not ready; details list each part's status"),
)
async def readyz(readiness: ReadinessDep) -> ReadyResponse:
    """Ready when a model version is loaded and the history store takes writes; 503 from
    SIGTERM on (draining), while requests are still served."""
    return await readiness.check()
