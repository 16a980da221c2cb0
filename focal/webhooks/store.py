"""The WebhookStore interface: endpoints (config, with revisions) and deliveries (an outbox).

Rules every backend follows (proven by ``tests/contract/test_webhook_store.py``):

- every call but ``claim_due`` filters on ``tenant_id``; another tenant's endpoint or delivery
  reads as ``None``, deletes as ``False`` and updates as ``NotFoundError``; returned objects are
  copies;
- ``create_endpoint`` inserts (revision 1); an existing id, in any tenant, is a ``ConflictError``.
  ``update_endpoint(endpoint, expected_revision=n)`` writes only if the tenant's endpoint is still
  at revision ``n`` (``StaleRevisionError`` otherwise, nothing written) and sets revision n + 1;
  ``created_at`` is kept, ``updated_at`` set;
- ``list_endpoints`` orders by ``created_at``, then id; ``event_type`` keeps the endpoints that
  take that event, ``enabled_only`` the enabled ones;
- ``delete_endpoint`` removes the endpoint and its deliveries;
- ``add_deliveries`` inserts all or nothing; each names an endpoint of its tenant
  (``NotFoundError`` otherwise) and an (event, endpoint) pair is delivered once (``ConflictError``);
- ``claim_due(now, lease_until, limit)`` takes, across tenants, up to ``limit`` PENDING deliveries
  due at ``now`` (``next_attempt_at <= now``) whose lease is absent or over, sets their lease to
  ``lease_until`` and returns them; concurrent claims never return the same delivery;
- ``update_delivery`` writes a delivery's progress (status, attempts, next attempt, lease, last
  status code and error; ``updated_at``); ``NotFoundError`` when it is gone. With ``held_lease``
  (the ``lease_until`` the writer holds) it writes only while the stored lease is still that one:
  a process that stalled past its lease, whose delivery a sweep gave to another process, gets
  ``StaleRevisionError`` and changes nothing (the other process's attempts stand);
- ``list_deliveries`` orders by ``created_at`` descending, then id; ``limit`` is 1..1000
  (``InvalidDataError``). Text that no store can keep (NUL, lone surrogates) is an
  ``InvalidDataError`` and changes nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from focal.validation import check_storable
from focal.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEventType

__all__ = ["WebhookStore", "check_delivery", "check_endpoint", "lease_taken_over"]


def lease_taken_over(delivery_id: UUID) -> str:
    return f"webhook delivery {delivery_id}: its lease was taken over by another process"


def check_endpoint(endpoint: WebhookEndpoint) -> None:
    check_storable(endpoint, "WebhookEndpoint")


def check_delivery(delivery: WebhookDelivery) -> None:
    check_storable(delivery, "WebhookDelivery")


class WebhookStore(ABC):
    @abstractmethod
    async def create_endpoint(self, endpoint: WebhookEndpoint) -> WebhookEndpoint: ...

    @abstractmethod
    async def update_endpoint(
        self, endpoint: WebhookEndpoint, *, expected_revision: int
    ) -> WebhookEndpoint: ...

    @abstractmethod
    async def get_endpoint(self, tenant_id: UUID, endpoint_id: UUID) -> WebhookEndpoint | None: ...

    @abstractmethod
    async def list_endpoints(
        self,
        tenant_id: UUID,
        *,
        event_type: WebhookEventType | None = None,
        enabled_only: bool = False,
        limit: int = 100,
    ) -> list[WebhookEndpoint]: ...

    @abstractmethod
    async def delete_endpoint(self, tenant_id: UUID, endpoint_id: UUID) -> bool: ...

    @abstractmethod
    async def add_deliveries(self, deliveries: Sequence[WebhookDelivery]) -> None: ...

    @abstractmethod
    async def claim_due(
        self, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[WebhookDelivery]: ...

    @abstractmethod
    async def update_delivery(
        self, delivery: WebhookDelivery, *, held_lease: datetime | None = None
    ) -> WebhookDelivery: ...

    @abstractmethod
    async def get_delivery(self, tenant_id: UUID, delivery_id: UUID) -> WebhookDelivery | None: ...

    @abstractmethod
    async def list_deliveries(
        self, tenant_id: UUID, endpoint_id: UUID, *, limit: int = 100
    ) -> list[WebhookDelivery]: ...
