"""GET /items/{item_id}/similar: thin; the Recommender searches the item index."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from service.deps import ReadKeyDep, RecommendDep
from service.errors import error_responses
from service.routes import recommend as _recommend  # noqa: F401 - registers the `any` convertor
from service.schemas import ID_PATTERN, SimilarResponse

router = APIRouter(prefix="/items", tags=["items"])

_ERRORS = error_responses(
    401, 404, 422, 503, s404="the item is not in the serving model version (unknown_item)"
)
ItemId = Annotated[
    str,
    Path(min_length=1, pattern=ID_PATTERN, description="external item id ('/' as %2F)"),
]


# `any` (service/routes/recommend.py): the id may hold '/' and newlines, and still meet
# validation rather than miss the route.
@router.get("/{item_id:any}/similar", response_model=SimilarResponse, responses=_ERRORS)
async def similar_items(
    service: RecommendDep,
    _: ReadKeyDep,
    item_id: ItemId,
    k: Annotated[int, Query(ge=1, description="items to return (at most RELREC_MAX_K)")] = 10,
) -> SimilarResponse:
    """The item's k nearest items in the model's metric, the item itself excluded; 404 for an
    item the serving version does not know."""
    return await service.similar(item_id, k)
