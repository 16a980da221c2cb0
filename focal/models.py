"""Pieces shared by every domain's models.

The models refuse at construction what no store could keep, so bad input fails early with
pydantic's message instead of deep inside a backend:

- timestamps are ``AwareDatetime``: a naive datetime means a different instant on every server;
- free-form payloads are ``JsonValue`` (``JsonDict``): JSONB and the Redis codec keep only JSON, so
  a UUID, datetime or tuple inside a dict is refused rather than silently changed on a round trip;
- counters and versions stop at ``MAX_INT4``, the largest PostgreSQL ``integer``;
- a vector without the name of the model that produced it cannot be compared safely, so an
  embedding requires ``embedding_model`` (``require_embedding_model``).

Stores still re-check everything: ``model_construct`` and ``model_copy(update=...)`` skip
validation, and the store is the boundary that must not trust its caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeAlias

from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError

__all__ = [
    "MAX_INT4",
    "FocalModel",
    "FrozenFocalModel",
    "JsonDict",
    "require_embedding_model",
    "utc_now",
]

MAX_INT4 = 2**31 - 1
"""The largest value of a PostgreSQL ``integer`` column: the bound on counters and versions."""

JsonDict: TypeAlias = dict[str, JsonValue]
"""A JSON object with string keys: what a ``jsonb`` column (and the Redis codec) keeps."""


def utc_now() -> datetime:
    """The current time, timezone-aware UTC (every stored timestamp uses it)."""
    return datetime.now(UTC)


def require_embedding_model(embedding: Sequence[float] | None, embedding_model: str | None) -> None:
    """A vector is comparable only with vectors of the same model, so it must name its model."""
    if embedding is not None and not embedding_model:
        raise ValueError("embedding_model is required when embedding is set")


class FocalModel(BaseModel):
    """Base for stored models: validated on assignment, unknown fields rejected.

    A refused assignment changes nothing: pydantic runs ``mode="after"`` model validators (scope,
    scenario graph, embedding model) on the already-updated instance and does not undo the update
    when they fail, so ``__setattr__`` puts the previous state back.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def __setattr__(self, name: str, value: Any) -> None:
        before, fields_set = self.__dict__, set(self.__pydantic_fields_set__)
        try:
            super().__setattr__(name, value)
        except ValidationError:
            object.__setattr__(self, "__dict__", before)
            object.__setattr__(self, "__pydantic_fields_set__", fields_set)
            raise


class FrozenFocalModel(BaseModel):
    """Base for immutable records (audit)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
