"""Liveness and readiness: /healthz answers while the process runs; /readyz once it can serve."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from service.deps import RuntimeDep
from service.errors import NotReadyError
from service.schemas import ErrorResponse, PartStatus, ReadyResponse

router = APIRouter(tags=["health"])

STORE_PING_TIMEOUT_S = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Alive: the event loop answers. Never touches the store or the model."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    responses={
        503: {"model": ErrorResponse, "description": "not ready; details list each part's status"}
    },
)
async def readyz(runtime: RuntimeDep) -> ReadyResponse:
    """Ready when a model version is loaded and the history store takes writes; 503 from
    SIGTERM on (draining), while requests are still served."""
    if runtime.draining:
        raise NotReadyError(
            "not ready: shutting down", [{"part": "server", "ready": False, "detail": "draining"}]
        )
    ready, detail, version = runtime.artifact_status()
    parts = {"artifact": PartStatus(ready=ready, detail=detail, version=version)}
    try:
        store_ok, store_detail = await asyncio.wait_for(
            asyncio.to_thread(runtime.store_status), STORE_PING_TIMEOUT_S
        )
    except TimeoutError:
        store_ok, store_detail = False, f"no answer within {STORE_PING_TIMEOUT_S:.0f} s"
    parts["store"] = PartStatus(ready=store_ok, detail=store_detail)
    if not all(p.ready for p in parts.values()):
        down = ", ".join(name for name, p in parts.items() if not p.ready)
        raise NotReadyError(
            f"not ready: {down}", [{"part": name, **p.model_dump()} for name, p in parts.items()]
        )
    return ReadyResponse(status="ready", parts=parts)
