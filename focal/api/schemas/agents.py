"""Agent request and response bodies."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import Field

from focal.api.schemas.common import Name, NotNull, RequestModel, ResponseModel

__all__ = ["AgentCreate", "AgentOut", "AgentUpdate"]


class AgentCreate(RequestModel):
    name: Name
    description: str | None = None
    system_prompt: str | None = None
    default_model: str | None = Field(default=None, max_length=255)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=1024, ge=1, le=200_000)
    enabled: bool = True


class AgentUpdate(RequestModel):
    """PATCH: only the fields present change; ``null`` clears a nullable field."""

    name: NotNull[Name] = None
    description: str | None = None
    system_prompt: str | None = None
    default_model: str | None = Field(default=None, max_length=255)
    temperature: NotNull[float] = Field(default=None, ge=0.0, le=2.0)
    max_tokens: NotNull[int] = Field(default=None, ge=1, le=200_000)
    enabled: NotNull[bool] = None


class AgentOut(ResponseModel):
    id: UUID
    tenant_id: UUID
    name: str
    description: str | None
    system_prompt: str | None
    default_model: str | None
    temperature: float
    max_tokens: int
    enabled: bool
    current_version: int = Field(description="behaviour version recorded by sessions")
    revision: int = Field(description="row revision, also the ETag; +1 on every change")
    created_at: datetime
    updated_at: datetime
