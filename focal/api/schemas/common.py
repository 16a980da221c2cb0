"""Shapes shared by every endpoint: strict request bodies and list envelopes."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = ["ItemList", "NonBlankStr", "Page", "RequestModel", "ResponseModel"]

T = TypeVar("T")


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# Text that must say something: whitespace alone is refused (it could not be embedded or matched).
NonBlankStr = Annotated[str, AfterValidator(_not_blank)]


class RequestModel(BaseModel):
    """Base of every request body: unknown fields are a 422, never silently dropped.

    No request body has a ``tenant_id``: the tenant comes from the token only.
    """

    model_config = ConfigDict(extra="forbid")


class ResponseModel(BaseModel):
    """Base of response bodies; built from domain models with ``from_attributes``."""

    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    """A page of a list with a known total."""

    items: list[T]
    total: int = Field(ge=0)
    limit: int = Field(ge=1)
    offset: int = Field(ge=0)


class ItemList(BaseModel, Generic[T]):
    """A whole (small) list, or a page without a total."""

    items: list[T]
