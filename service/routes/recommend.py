"""GET /recommend/{user_id}: thin; the RecommendService and the Recommender do the work."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi.routing import APIRoute
from starlette.convertors import Convertor, register_url_convertor

from service.deps import ReadKeyDep, RecommendDep
from service.errors import error_responses
from service.schemas import (
    CANDIDATES_DOC,
    ID_PATTERN,
    Id,
    RecommendBatchResponse,
    RecommendRequest,
    RecommendResponse,
)

router = APIRouter(tags=["recommend"])


class _AnyConvertor(Convertor[str]):
    """The rest of the path, newlines included. Starlette's `path` stops at a newline, so an id
    holding one missed the route (404) or, at its end, was cut off ("u\n" served as "u"); here it
    reaches validation and gets the 422 of any other id with a control character."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("any", _AnyConvertor())

# No 404: an unknown user is served (cold start), and unknown filter ids are listed in
# `unknown_ids`, not refused.
_GET_ERRORS = error_responses(
    401, 413, 422, 503, s413="`exclude` or `candidates` longer than RELREC_MAX_FILTER_IDS"
)
_POST_ERRORS = error_responses(
    401,
    413,
    422,
    503,
    s413="the body over RELREC_MAX_BODY_BYTES, more users than "
    "RELREC_MAX_RECOMMEND_USERS, or a filter longer than RELREC_MAX_FILTER_IDS",
)
UserId = Annotated[
    str,
    Path(
        min_length=1,
        pattern=ID_PATTERN,
        description="external user id (URL-encode '/' as %2F)",
    ),
]


@router.get("/recommend/{user_id:any}", response_model=RecommendResponse, responses=_GET_ERRORS)
async def recommend(
    service: RecommendDep,
    _: ReadKeyDep,
    user_id: UserId,
    k: Annotated[int, Query(ge=1, description="items to return (at most RELREC_MAX_K)")] = 10,
    explain: Annotated[bool, Query(description="list the history items that weighed most")] = False,
    offset: Annotated[
        int, Query(ge=0, description="ranks to skip, for paging (at most RELREC_MAX_K)")
    ] = 0,
    # Lists without a null: in a query string "null" or "false" is an id like any other, and
    # an absent list and an empty one read the same (no filter).
    exclude: Annotated[list[Id], Query(description="item ids never to return")] = [],  # noqa: B006
    candidates: Annotated[
        list[Id], Query(description=CANDIDATES_DOC)
    ] = [],  # noqa: B006
) -> Response:
    """Top-k items for a user: trained, known only by posted history, or not at all. Filter
    ids the version does not know are listed in `unknown_ids`, not refused."""
    rec = await service.recommend(user_id, k, explain, offset, exclude, candidates or None)
    return service.render(rec)


@router.post("/recommend", response_model=RecommendBatchResponse, responses=_POST_ERRORS)
async def recommend_batch(body: RecommendRequest, service: RecommendDep, _: ReadKeyDep) -> Response:
    """Top-k items for each of many users, with the same k and filters, in one micro-batch."""
    return service.render(await service.recommend_batch(body))


def get_route() -> APIRoute:
    """The documented GET /recommend/{user_id} (its template names the fast path's requests
    in /metrics and the access log, service/fast_recommend.py)."""
    for route in router.routes:
        if isinstance(route, APIRoute) and route.endpoint is recommend:
            return route
    raise LookupError("GET /recommend/{user_id} is not on the router")
