"""Webhook endpoints (a tenant's receivers) and deliveries (one event sent to one endpoint)."""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID, uuid4

from pydantic import AwareDatetime, Field

from focal.models import MAX_INT4, FocalModel, utc_now

__all__ = ["DeliveryStatus", "WebhookDelivery", "WebhookEndpoint", "WebhookEventType"]


class WebhookEventType(StrEnum):
    SESSION_HANDOFF_REQUESTED = "session.handoff_requested"


class WebhookEndpoint(FocalModel):
    """Where a tenant wants events delivered. ``secret`` signs every delivery; Focal generates it,
    the API shows it once (on create or rotation) and never again. ``revision`` is the row's
    optimistic-concurrency counter (ETag), kept by the store."""

    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    url: str = Field(min_length=1, max_length=2048)
    event_types: list[WebhookEventType] = Field(min_length=1)
    description: str | None = Field(default=None, max_length=1000)
    enabled: bool = True
    secret: str = Field(min_length=32, repr=False)
    revision: int = Field(default=1, ge=1, le=MAX_INT4)
    created_at: AwareDatetime = Field(default_factory=utc_now)
    updated_at: AwareDatetime = Field(default_factory=utc_now)


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"  # not delivered yet; attempted again at next_attempt_at
    DELIVERED = "DELIVERED"  # an attempt got a 2xx
    FAILED = "FAILED"  # out of attempts (or the endpoint was disabled meanwhile)


class WebhookDelivery(FocalModel):
    """One event for one endpoint. ``payload`` is the exact body of every attempt (so the receiver
    can deduplicate on ``id``/``webhook-id``, and a retry is signed over the same bytes).
    ``lease_until``: a process is working on it until then; past it, any process may take it over."""

    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    endpoint_id: UUID
    event_id: UUID
    event_type: WebhookEventType
    session_id: UUID | None = None
    payload: str = Field(min_length=2)
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = Field(default=0, ge=0, le=MAX_INT4)
    next_attempt_at: AwareDatetime | None = None
    lease_until: AwareDatetime | None = None
    last_status_code: int | None = Field(default=None, ge=100, le=599)
    last_error: str | None = None
    created_at: AwareDatetime = Field(default_factory=utc_now)
    updated_at: AwareDatetime = Field(default_factory=utc_now)
