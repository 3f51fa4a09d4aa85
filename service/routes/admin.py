"""Admin: POST /admin/reload swaps to the version `current` names (API key when configured)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.deps import AdminKeyDep, VersionsDep
from service.errors import error_responses
from service.schemas import ReloadResponse

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post(
    "/reload",
    response_model=ReloadResponse,
    # 413: the body bound applies to every POST, although this one takes no body
    responses=error_responses(401, 409, 413, 422, 503),
)
async def reload(
    versions: VersionsDep,
    _: AdminKeyDep,
    force: Annotated[bool, Query(description="reload even if `current` is unchanged")] = False,
) -> ReloadResponse:
    """Load `current` beside the serving version and swap; a broken version is refused (409)
    and the serving version stays."""
    return await versions.reload(force=force)
