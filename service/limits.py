"""Limits: the bounds on requests, frozen at start-up and checked here only.

Each bound (k, id length, interactions per POST, users per batch recommend, ids per filter)
is a setting; the routes' schemas only say what an id *looks* like (no control characters), and
every length or count check goes through one `Limits` method, so that the message, the status
and the OpenAPI document (`document`) cannot disagree between routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.errors import InvalidInputError, PayloadTooLargeError

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    max_k: int
    max_id_length: int
    max_batch: int  # interactions per POST /interactions
    max_users: int  # users per POST /recommend
    max_filter: int  # ids per `exclude` or `candidates`

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:  # service.settings.Settings
        return cls(
            max_k=settings.max_k,
            max_id_length=settings.max_id_length,
            max_batch=settings.max_batch,
            max_users=settings.max_recommend_users,
            max_filter=settings.max_filter_ids,
        )

    def check_id(self, name: str, value: str | None) -> None:
        """422 for an id longer than RELREC_MAX_ID_LENGTH (the schema checks its characters)."""
        if value is not None and len(value) > self.max_id_length:
            raise InvalidInputError(f"{name} is longer than {self.max_id_length} characters")

    def check_k(self, k: int, offset: int = 0) -> None:
        """422 when k or offset passes RELREC_MAX_K (so a page never ranks deeper than twice
        that); two bounds of their own rather than one on k + offset, which a schema cannot
        state."""
        for name, value in (("k", k), ("offset", offset)):
            if value > self.max_k:
                raise InvalidInputError(
                    f"{name} must be at most {self.max_k}", [{"loc": ["query", name]}]
                )

    def check_batch(self, n: int) -> None:
        """413 for more interactions in one request than RELREC_MAX_BATCH."""
        _check_count(n, self.max_batch, "interactions in one request", "RELREC_MAX_BATCH")

    def check_users(self, n: int) -> None:
        """413 for more users in one batch recommend than RELREC_MAX_RECOMMEND_USERS."""
        _check_count(n, self.max_users, "users in one request", "RELREC_MAX_RECOMMEND_USERS")

    def check_filter(self, name: str, n: int) -> None:
        """413 for a filter list longer than RELREC_MAX_FILTER_IDS."""
        _check_count(n, self.max_filter, f"ids in `{name}`", "RELREC_MAX_FILTER_IDS")

    def document(self, doc: dict[str, Any]) -> None:
        """Write these bounds into the OpenAPI document, so that what it calls valid is what
        the service accepts: every id field and parameter, k, and the list sizes."""
        for operations in doc["paths"].values():
            for operation in operations.values():
                for param in operation.get("parameters", []):
                    self._document_param(param)
        for schema in doc["components"]["schemas"].values():
            for name, prop in schema.get("properties", {}).items():
                self._document_property(name, prop)

    def _document_param(self, param: dict[str, Any]) -> None:
        schema = param.get("schema", {})
        if param["name"] in ("user_id", "item_id", "exclude", "candidates"):
            _bound(schema, "maxLength", self.max_id_length)
        if param["name"] in ("exclude", "candidates"):
            _bound(schema, "maxItems", self.max_filter)
        elif param["name"] in ("k", "offset"):
            schema["maximum"] = self.max_k

    def _document_property(self, name: str, prop: dict[str, Any]) -> None:
        if name in ("user_id", "item_id", "event_id", "users", "exclude", "candidates"):
            _bound(prop, "maxLength", self.max_id_length)
        if name in ("exclude", "candidates"):
            _bound(prop, "maxItems", self.max_filter)
        elif name == "users":
            _bound(prop, "maxItems", self.max_users)
        elif name == "interactions":
            prop["maxItems"] = self.max_batch
        elif name in ("k", "offset"):
            prop["maximum"] = self.max_k


def _bound(schema: dict[str, Any], key: str, value: int) -> None:
    """Set a string bound (maxLength) on a schema's strings, also inside arrays, or a list
    bound (maxItems) on its arrays; an optional field's branches (anyOf) each get it."""
    for branch in schema.get("anyOf", [schema]):
        kind = branch.get("type")
        if key == "maxItems" and kind == "array":
            branch[key] = value
        elif key == "maxLength" and kind == "string":
            branch[key] = value
        elif key == "maxLength" and kind == "array":
            branch.setdefault("items", {})[key] = value


def _check_count(n: int, limit: int, what: str, env: str) -> None:
    if n > limit:
        raise PayloadTooLargeError(f"{n} {what}; the limit is {limit} ({env})")
