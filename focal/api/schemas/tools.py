"""Tool definition request and response bodies (``/v1/tools``).

The secret is write-only: a body may set it (or ``null`` to remove it), no response ever carries
it; ``has_secret`` says whether one is stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import Field, SecretStr

from focal.alignment.models import MAX_TOOL_DESCRIPTION_LENGTH, MAX_TOOL_SECRET_LENGTH, ToolDefinition
from focal.api.schemas.behaviour import ToolId
from focal.api.schemas.common import NotNull, RequestModel, ResponseModel
from focal.tools.models import MAX_TOOL_TIMEOUT_SECONDS, HttpMethod

__all__ = ["HttpToolIn", "HttpToolOut", "ToolDefinitionCreate", "ToolDefinitionOut", "ToolDefinitionUpdate"]

_SECRET = Field(
    default=None,
    min_length=1,
    max_length=MAX_TOOL_SECRET_LENGTH,
    description="write-only value of http.secret_header, sent only to this tool's URL; null removes it",
)


def _empty_parameters() -> dict[str, Any]:
    return {"type": "object", "properties": {}}


class HttpToolIn(RequestModel):
    method: HttpMethod = "GET"
    url_template: str = Field(
        min_length=1,
        max_length=2048,
        description="absolute http(s) URL; {parameter} placeholders in its path and query only",
        examples=["https://shop.example/orders/{order_number}"],
    )
    headers: dict[str, str] = Field(default_factory=dict, description="sent as they are (not secret)")
    timeout_seconds: float = Field(default=5.0, gt=0, le=MAX_TOOL_TIMEOUT_SECONDS)
    secret_header: str | None = Field(default=None, min_length=1, max_length=128, examples=["X-Api-Key"])


class HttpToolOut(ResponseModel):
    method: str
    url_template: str
    headers: dict[str, str]
    timeout_seconds: float
    secret_header: str | None


class ToolDefinitionCreate(RequestModel):
    name: ToolId
    description: str = Field(
        default="", max_length=MAX_TOOL_DESCRIPTION_LENGTH, description="told to the model"
    )
    parameters: dict[str, Any] = Field(
        default_factory=_empty_parameters, description='JSON Schema of the arguments ("type": "object")'
    )
    kind: Literal["http"] = "http"
    http: HttpToolIn
    secret: SecretStr | None = _SECRET


class ToolDefinitionUpdate(RequestModel):
    """PATCH: the fields sent change (``http`` as a whole); the name never changes."""

    description: NotNull[str] = Field(default=None, max_length=MAX_TOOL_DESCRIPTION_LENGTH)
    parameters: NotNull[dict[str, Any]] = None
    http: NotNull[HttpToolIn] = None
    secret: SecretStr | None = _SECRET


class ToolDefinitionOut(ResponseModel):
    id: UUID
    name: str
    description: str
    parameters: dict[str, Any]
    kind: str
    http: HttpToolOut
    has_secret: bool
    secret: None = Field(default=None, description="write-only: never returned (see has_secret)")
    revision: int = Field(description="row revision, also the ETag; +1 on every change")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, definition: ToolDefinition) -> ToolDefinitionOut:
        """The definition as the API shows it: everything but the secret's value."""
        return cls.model_validate(
            {
                **definition.model_dump(exclude={"secret", "tenant_id", "deleted_at"}),
                "has_secret": definition.secret is not None,
            }
        )
