"""/items/{item_id}: similar items (read), and PUT/DELETE of items live (admin, issue 20).

Thin: the Recommender searches the item index; `service.item_catalogue.ItemsService` places an
item from its text and hides items."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from service.deps import AdminKeyDep, ItemsDep, ReadKeyDep, RecommendDep
from service.errors import error_responses
from service.routes import recommend as _recommend  # noqa: F401 - registers the `any` convertor
from service.schemas import ID_PATTERN, ItemPutRequest, ItemResponse, SimilarResponse

router = APIRouter(prefix="/items", tags=["items"])

_ERRORS = error_responses(
    401, 404, 422, 503, s404="the item is not in the serving model version (unknown_item)"
)
_PUT_ERRORS = error_responses(
    401, 404, 409, 413, 422, 503,
    s404="no such route for an item id holding '/' unescaped",
    s409="the serving version has the item already (item_exists), or no text projection "
    "(no_text_projection: trained without item text)",
    s422="text blank, not a string, or longer than RELREC_MAX_ITEM_TEXT_CHARS; or a bad id",
)
_DELETE_ERRORS = error_responses(
    401, 404, 422, 503, s404="the item is neither in the serving version nor PUT (unknown_item)"
)
_RESTORE_ERRORS = error_responses(
    401, 404, 413, 422, 503,
    s404="the item is not in the serving version, nor PUT (unknown_item): a PUT item that was "
    "deleted comes back by PUT with its text",
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


@router.put(
    "/{item_id:any}",
    response_model=ItemResponse,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": ItemResponse, "description": "the item's text was replaced"},
               **_PUT_ERRORS},
)
async def put_item(
    service: ItemsDep, _: AdminKeyDep, item_id: ItemId, body: ItemPutRequest, response: Response
) -> ItemResponse:
    """Place a new item from its text with the serving version's text projection; it is
    recommendable from the next request on, kept in the history store across restarts and
    reloads until an export includes it. 201 when new, 200 when its text was replaced."""
    item, created = await service.put(item_id, body.text)
    if not created:
        response.status_code = status.HTTP_200_OK
    return item


@router.delete("/{item_id:any}", response_model=ItemResponse, responses=_DELETE_ERRORS)
async def delete_item(service: ItemsDep, _: AdminKeyDep, item_id: ItemId) -> ItemResponse:
    """Hide an item (trained or PUT) from every list: recommendations, batch recommend,
    similar items, the popular fallback; kept hidden across restarts and reloads. Deleting a
    hidden trained item again answers the same."""
    return await service.delete(item_id)


@router.post("/{item_id:any}/restore", response_model=ItemResponse, responses=_RESTORE_ERRORS)
async def restore_item(service: ItemsDep, _: AdminKeyDep, item_id: ItemId) -> ItemResponse:
    """Serve a trained item hidden by DELETE again, in every list, from the next request on;
    kept across restarts and reloads. Restoring a visible item answers the same."""
    return await service.restore(item_id)
