"""A typed Python client of the relrec HTTP API, sync and async, on httpx.

Every endpoint is one method that returns the response model of `service.schemas`, and every
error answer (the one JSON shape of `service.errors`) is raised as `RelrecApiError` with its
status, code, message, details and request id, so that a caller handles one exception type:

    with RelrecClient("http://localhost:8000", api_key="...") as relrec:
        recs = relrec.recommend("u1", k=10, exclude=["i9"])
        for item in recs.items:
            print(item.item_id, item.score)   # (print is the caller's business)

`AsyncRelrecClient` has the same methods as coroutines. Either takes an `httpx.Client` (or
`AsyncClient`) of the caller's, e.g. with an ASGI transport in tests. Ids are strings: the API
refuses a JSON number where an id goes (422).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from service.interaction_schemas import InteractionsResponse
from service.schemas import (
    ErasureResponse,
    ItemResponse,
    ModelResponse,
    ReadyResponse,
    RecommendBatchResponse,
    RecommendResponse,
    ReloadResponse,
    SimilarResponse,
)

__all__ = ["AsyncRelrecClient", "Interaction", "RelrecApiError", "RelrecClient"]

M = TypeVar("M", bound=BaseModel)
Method = Literal["GET", "POST", "PUT", "DELETE"]


class RelrecApiError(Exception):
    """An error answer of the API: `status` (HTTP), `code` (e.g. unknown_item), `message`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.request_id = request_id


@dataclass(frozen=True)
class Interaction:
    """One interaction to post (`POST /interactions`); None fields are left to the server."""

    user_id: str
    item_id: str
    timestamp: float | str | None = None
    weight: float | None = None
    event_id: str | None = None
    type: Literal["positive", "negative"] | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass(frozen=True)
class _Call(Generic[M]):
    """One request, built the same way for both clients, and the model of its answer."""

    method: Method
    path: str
    model: type[M]
    params: dict[str, Any] | None = None
    body: Any = None


def _segment(value: str) -> str:
    """An id as one path segment: '/' and every reserved character percent-encoded."""
    return quote(value, safe="")


def _filters(
    k: int, offset: int, explain: bool, exclude: Sequence[str], candidates: Sequence[str] | None
) -> dict[str, Any]:
    params: dict[str, Any] = {"k": k, "offset": offset, "explain": explain}
    if exclude:
        params["exclude"] = list(exclude)
    if candidates is not None:
        params["candidates"] = list(candidates)
    return params


def _parse(response: httpx.Response, model: type[M]) -> M:
    if response.status_code >= 400:
        try:
            body = response.json()
            err = body["error"]
            raise RelrecApiError(
                response.status_code,
                str(err["code"]),
                str(err["message"]),
                list(err.get("details", [])),
                body.get("request_id"),
            )
        except (ValueError, KeyError, TypeError):
            raise RelrecApiError(
                response.status_code, "http_error", response.text[:500] or response.reason_phrase
            ) from None
    return model.model_validate_json(response.content)


class _Calls:
    """The endpoints as `_Call`s; the clients only send them."""

    @staticmethod
    def recommend(
        user_id: str,
        k: int,
        offset: int,
        explain: bool,
        exclude: Sequence[str],
        candidates: Sequence[str] | None,
    ) -> _Call[RecommendResponse]:
        params = _filters(k, offset, explain, exclude, candidates)
        return _Call("GET", f"/recommend/{_segment(user_id)}", RecommendResponse, params)

    @staticmethod
    def recommend_batch(
        users: Sequence[str],
        k: int,
        offset: int,
        explain: bool,
        exclude: Sequence[str],
        candidates: Sequence[str] | None,
    ) -> _Call[RecommendBatchResponse]:
        body = {"users": list(users), **_filters(k, offset, explain, exclude, candidates)}
        return _Call("POST", "/recommend", RecommendBatchResponse, body=body)

    @staticmethod
    def post(interactions: Interaction | Sequence[Interaction]) -> _Call[InteractionsResponse]:
        if isinstance(interactions, Interaction):
            body: Any = interactions.to_json()
        else:
            body = {"interactions": [i.to_json() for i in interactions]}
        return _Call("POST", "/interactions", InteractionsResponse, body=body)


    @staticmethod
    def put_item(item_id: str, text: str) -> _Call[ItemResponse]:
        return _Call("PUT", f"/items/{_segment(item_id)}", ItemResponse, body={"text": text})


class RelrecClient:
    """Sync client; use as a context manager or call `close()`."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        client: httpx.Client | None = None,
        timeout: float = 10.0,
    ) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self._own = client is None
        self.http = client or httpx.Client(base_url=base_url, timeout=timeout)
        self.headers = headers

    def __enter__(self) -> RelrecClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self.http.close()

    def _send(self, call: _Call[M]) -> M:
        r = self.http.request(
            call.method, call.path, params=call.params, json=call.body, headers=self.headers
        )
        return _parse(r, call.model)

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        offset: int = 0,
        explain: bool = False,
        exclude: Sequence[str] = (),
        candidates: Sequence[str] | None = None,
    ) -> RecommendResponse:
        """`GET /recommend/{user_id}`."""
        return self._send(_Calls.recommend(user_id, k, offset, explain, exclude, candidates))

    def recommend_batch(
        self,
        users: Sequence[str],
        k: int = 10,
        *,
        offset: int = 0,
        explain: bool = False,
        exclude: Sequence[str] = (),
        candidates: Sequence[str] | None = None,
    ) -> RecommendBatchResponse:
        """`POST /recommend`: one result per user, one micro-batch."""
        call = _Calls.recommend_batch(users, k, offset, explain, exclude, candidates)
        return self._send(call)

    def similar(self, item_id: str, k: int = 10) -> SimilarResponse:
        """`GET /items/{item_id}/similar`."""
        call = _Call("GET", f"/items/{_segment(item_id)}/similar", SimilarResponse, {"k": k})
        return self._send(call)

    def model(self) -> ModelResponse:
        """`GET /model`."""
        return self._send(_Call("GET", "/model", ModelResponse))

    def post_interactions(
        self, interactions: Interaction | Sequence[Interaction]
    ) -> InteractionsResponse:
        """`POST /interactions`: one, or a batch (a partial success)."""
        return self._send(_Calls.post(interactions))

    def erase_user(self, user_id: str) -> ErasureResponse:
        """`DELETE /users/{user_id}`."""
        call = _Call("DELETE", f"/users/{_segment(user_id)}", ErasureResponse)
        return self._send(call)

    def ready(self) -> ReadyResponse:
        """`GET /readyz`; RelrecApiError (503) when not ready."""
        return self._send(_Call("GET", "/readyz", ReadyResponse))

    def reload(self, force: bool = False) -> ReloadResponse:
        """`POST /admin/reload`."""
        call = _Call("POST", "/admin/reload", ReloadResponse, {"force": force})
        return self._send(call)

    def put_item(self, item_id: str, text: str) -> ItemResponse:
        """`PUT /items/{item_id}`: place a new item from its text (admin key)."""
        return self._send(_Calls.put_item(item_id, text))

    def delete_item(self, item_id: str) -> ItemResponse:
        """`DELETE /items/{item_id}`: hide an item from every list (admin key)."""
        return self._send(_Call("DELETE", f"/items/{_segment(item_id)}", ItemResponse))

    def restore_item(self, item_id: str) -> ItemResponse:
        """`POST /items/{item_id}/restore`: serve a hidden trained item again (admin key)."""
        return self._send(_Call("POST", f"/items/{_segment(item_id)}/restore", ItemResponse))


class AsyncRelrecClient:
    """Async client with the methods of `RelrecClient` as coroutines."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._own = client is None
        self.http = client or httpx.AsyncClient(base_url=base_url, timeout=timeout)
        self.headers = {"X-API-Key": api_key} if api_key else {}

    async def __aenter__(self) -> AsyncRelrecClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own:
            await self.http.aclose()

    async def _send(self, call: _Call[M]) -> M:
        r = await self.http.request(
            call.method, call.path, params=call.params, json=call.body, headers=self.headers
        )
        return _parse(r, call.model)

    async def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        offset: int = 0,
        explain: bool = False,
        exclude: Sequence[str] = (),
        candidates: Sequence[str] | None = None,
    ) -> RecommendResponse:
        call = _Calls.recommend(user_id, k, offset, explain, exclude, candidates)
        return await self._send(call)

    async def recommend_batch(
        self,
        users: Sequence[str],
        k: int = 10,
        *,
        offset: int = 0,
        explain: bool = False,
        exclude: Sequence[str] = (),
        candidates: Sequence[str] | None = None,
    ) -> RecommendBatchResponse:
        call = _Calls.recommend_batch(users, k, offset, explain, exclude, candidates)
        return await self._send(call)

    async def similar(self, item_id: str, k: int = 10) -> SimilarResponse:
        call = _Call("GET", f"/items/{_segment(item_id)}/similar", SimilarResponse, {"k": k})
        return await self._send(call)

    async def model(self) -> ModelResponse:
        return await self._send(_Call("GET", "/model", ModelResponse))

    async def post_interactions(
        self, interactions: Interaction | Sequence[Interaction]
    ) -> InteractionsResponse:
        return await self._send(_Calls.post(interactions))

    async def erase_user(self, user_id: str) -> ErasureResponse:
        call = _Call("DELETE", f"/users/{_segment(user_id)}", ErasureResponse)
        return await self._send(call)

    async def ready(self) -> ReadyResponse:
        return await self._send(_Call("GET", "/readyz", ReadyResponse))

    async def reload(self, force: bool = False) -> ReloadResponse:
        call = _Call("POST", "/admin/reload", ReloadResponse, {"force": force})
        return await self._send(call)

    async def put_item(self, item_id: str, text: str) -> ItemResponse:
        return await self._send(_Calls.put_item(item_id, text))

    async def delete_item(self, item_id: str) -> ItemResponse:
        return await self._send(_Call("DELETE", f"/items/{_segment(item_id)}", ItemResponse))

    async def restore_item(self, item_id: str) -> ItemResponse:
        call = _Call("POST", f"/items/{_segment(item_id)}/restore", ItemResponse)
        return await self._send(call)
