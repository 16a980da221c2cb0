"""Shapes shared by every endpoint: strict request bodies, the constrained text types, list envelopes.

Request bodies (``RequestModel``) are strict about scalars: ``true`` is not an integer, ``"yes"`` or
``1`` is not a boolean, ``"12"`` is not a number. Everything a JSON document can only carry as a
string (UUIDs, datetimes, enum values) is still parsed from its string.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

__all__ = [
    "ItemList",
    "Name",
    "NonBlankStr",
    "NotNull",
    "Page",
    "RequestModel",
    "ResponseModel",
]

T = TypeVar("T")

_NOT_BLANK = re.compile(r"\S")


def _not_blank(value: str) -> str:
    if not _NOT_BLANK.search(value):
        raise ValueError("must not be blank")
    return value


class _DocumentNotBlank:
    """Says "not blank" in the JSON schema too (a ``pattern``), so clients see the rule."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema.setdefault("pattern", _NOT_BLANK.pattern)
        return schema


# Text that must say something: whitespace alone is refused (it could not be embedded or matched).
NonBlankStr = Annotated[str, AfterValidator(_not_blank), _DocumentNotBlank()]

# The name of an agent, rule, template, scenario, step or tool: 1..255 characters, not blank.
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=255), AfterValidator(_not_blank), _DocumentNotBlank()
]


class _NotNullable:
    """Marks an optional field that may be omitted but not sent as ``null``.

    ``X | None`` with a ``None`` default is how a PATCH body tells "absent" (nothing changes)
    from a value; for a field the domain model cannot hold as null (an agent's ``name``), an
    explicit ``null`` is a 422 and the JSON schema declares the field non-nullable.
    """

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        schema = handler(source)
        if schema["type"] != "nullable":
            raise TypeError(f"NotNull[...] wraps the type X of an optional field, not {source!r}")
        inner: CoreSchema = schema["schema"]
        return inner


# PATCH field that may be left out but not set to null: ``name: NotNull[Name] = None``.
NotNull = Annotated[T | None, _NotNullable()]

_STRICT_SCALARS = frozenset({"int", "float", "bool", "str"})


def _strict_scalars(schema: CoreSchema, model: type[BaseModel]) -> None:
    """Set ``strict`` on every int/float/bool/str validator of ``model``'s own fields.

    Other models met on the way are left alone: a nested request body is a ``RequestModel`` and
    does this itself; any other model keeps its own rules.
    """
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        if kind == "model" and node.get("cls") is not model:
            continue
        if kind in _STRICT_SCALARS:
            node["strict"] = True
        stack.extend(value for key, value in node.items() if key not in ("metadata", "serialization"))


def _no_null_default_unless_nullable(schema: dict[str, Any]) -> None:
    """Drop ``"default": null`` from properties that cannot be null (``NotNull`` PATCH fields):
    such a field has no default, it is simply absent."""
    for prop in schema.get("properties", {}).values():
        if "default" not in prop or prop["default"] is not None:
            continue
        variants = prop.get("anyOf", [prop])
        nullable = any(v.get("type") == "null" for v in variants)
        untyped = not any(key in prop for key in ("type", "$ref", "anyOf", "allOf", "oneOf", "enum"))
        if not nullable and not untyped:
            del prop["default"]


class RequestModel(BaseModel):
    """Base of every request body: unknown fields are a 422, never silently dropped; scalars are
    strict (see the module docstring).

    No request body has a ``tenant_id``: the tenant comes from the token only.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_null_default_unless_nullable)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        # Not ``strict=True`` in the config: FastAPI validates the parsed JSON in Python mode, where
        # strict mode would also refuse a UUID, a datetime or an enum given as a string.
        schema = handler(source)
        _strict_scalars(schema, cls)
        return schema


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
