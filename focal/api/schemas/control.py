"""Request and response bodies of session control (operator replies, mode, close), the 202 of a
chat in a MANUAL session, and webhook endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, Field, StringConstraints

from focal.alignment.turn.models import MAX_MESSAGE_CHARS
from focal.api.schemas.common import NonBlankStr, NotNull, RequestModel, ResponseModel
from focal.conversation.models import SessionMode
from focal.webhooks.models import DeliveryStatus, WebhookEventType

__all__ = [
    "ChatAccepted",
    "OperatorMessage",
    "OperatorMessageOut",
    "SessionUpdate",
    "WebhookCreate",
    "WebhookCreated",
    "WebhookDeliveryOut",
    "WebhookOut",
    "WebhookSecret",
    "WebhookUpdate",
]

_URL = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
_DESCRIPTION = Annotated[str, StringConstraints(max_length=1000)]


class ChatAccepted(BaseModel):
    """A message recorded in a MANUAL session: a person answers (``POST /v1/sessions/{id}/messages``)."""

    session_id: UUID
    turn_id: UUID
    turn_number: int
    session_mode: SessionMode
    status: Literal["awaiting_human_agent"] = "awaiting_human_agent"


class OperatorMessage(RequestModel):
    text: NonBlankStr = Field(
        min_length=1,
        max_length=MAX_MESSAGE_CHARS,
        description="the reply, stripped of surrounding whitespace",
    )
    author: NotNull[Annotated[str, StringConstraints(min_length=1, max_length=255)]] = Field(
        default=None, description="who answered (an operator id or name), kept in the audit trail"
    )


class OperatorMessageOut(BaseModel):
    session_id: UUID
    turn_id: UUID
    turn_number: int
    text: str
    author: str | None
    session_mode: SessionMode
    created_at: datetime


class SessionUpdate(RequestModel):
    mode: NotNull[SessionMode] = Field(
        default=None, description="AUTO: the agent answers again; MANUAL: a person answers"
    )


class WebhookCreate(RequestModel):
    url: _URL = Field(description="https URL the events are POSTed to")
    event_types: list[WebhookEventType] = Field(min_length=1, max_length=len(WebhookEventType))
    description: _DESCRIPTION | None = None
    enabled: bool = True


class WebhookUpdate(RequestModel):
    url: NotNull[_URL] = None
    event_types: NotNull[list[WebhookEventType]] = Field(
        default=None, min_length=1, max_length=len(WebhookEventType)
    )
    description: _DESCRIPTION | None = None
    enabled: NotNull[bool] = None


class WebhookOut(ResponseModel):
    id: UUID
    url: str
    event_types: list[WebhookEventType]
    description: str | None
    enabled: bool
    revision: int = Field(description="row revision, also the ETag; +1 on every change")
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="signs every delivery (Standard Webhooks, HMAC-SHA256); shown only now, never again"
    )


class WebhookSecret(BaseModel):
    id: UUID
    revision: int
    secret: str = Field(description="the new signing secret; shown only now, never again")


class WebhookDeliveryOut(ResponseModel):
    id: UUID
    endpoint_id: UUID
    event_id: UUID
    event_type: WebhookEventType
    session_id: UUID | None
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
