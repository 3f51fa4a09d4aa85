"""GET /recommend/{user_id}: thin; the Runtime and the Recommender do the work."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from starlette.convertors import Convertor, register_url_convertor

from service.deps import ReadKeyDep, RuntimeDep
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

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (401, 422, 503)
}


@router.get("/recommend/{user_id:any}", response_model=RecommendResponse, responses=_ERRORS)
async def recommend(
    runtime: RuntimeDep,
    _: ReadKeyDep,
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
) -> Response:
    """Top-k items for a user: trained, known only by posted history, or not at all."""
    s = runtime.settings
    if len(user_id) > s.max_id_length:
        raise InvalidInputError(f"user_id is longer than {s.max_id_length} characters")
    if k > s.max_k:
        raise InvalidInputError(f"k must be at most {s.max_k}", [{"loc": ["query", "k"]}])
    rec = await runtime.recommend(user_id, k, explain)
    # Rendered here rather than by FastAPI so that /metrics can time it as the "serialize"
    # stage; the body is the same `RecommendResponse` JSON (response_model documents it).
    started = time.perf_counter()
    body = to_response(rec).model_dump_json()
    runtime.metrics.stage_seconds.labels("serialize").observe(time.perf_counter() - started)
    return Response(body, media_type="application/json")


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
