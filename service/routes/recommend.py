"""GET /recommend/{user_id}: thin; the Runtime and the Recommender do the work."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from service.deps import RuntimeDep
from service.errors import InvalidInputError
from service.recommender import Recommendation
from service.schemas import (
    ID_MAX,
    ID_PATTERN,
    ErrorResponse,
    ExplainItem,
    RecommendedItem,
    RecommendResponse,
)

router = APIRouter(tags=["recommend"])

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (422, 503)
}


@router.get("/recommend/{user_id:path}", response_model=RecommendResponse, responses=_ERRORS)
async def recommend(
    runtime: RuntimeDep,
    user_id: Annotated[
        str,
        Path(
            min_length=1,
            max_length=ID_MAX,
            pattern=ID_PATTERN,
            description="external user id (URL-encode '/' as %2F)",
        ),
    ],
    k: Annotated[int, Query(ge=1, description="items to return (at most RELREC_MAX_K)")] = 10,
    explain: Annotated[bool, Query(description="list the history items that weighed most")] = False,
) -> RecommendResponse:
    """Top-k items for a user: trained, known only by posted history, or not at all."""
    s = runtime.settings
    if len(user_id) > s.max_id_length:
        raise InvalidInputError(f"user_id is longer than {s.max_id_length} characters")
    if k > s.max_k:
        raise InvalidInputError(f"k must be at most {s.max_k}", [{"loc": ["query", "k"]}])
    return to_response(await runtime.recommend(user_id, k, explain))


def to_response(rec: Recommendation) -> RecommendResponse:
    return RecommendResponse(
        user_id=rec.user_id,
        model_version=rec.model_version,
        source=rec.source,
        items=[
            RecommendedItem(
                item_id=it.item_id,
                score=it.score,
                because=None
                if it.because is None
                else [ExplainItem(item_id=i, weight=w) for i, w in it.because],
            )
            for it in rec.items
        ],
    )
