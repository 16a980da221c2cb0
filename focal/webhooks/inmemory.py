"""The in-memory reference WebhookStore (one process: ``storage=memory`` and tests)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from focal.alignment.stores.revisions import stale_revision
from focal.errors import ConflictError, NotFoundError, StaleRevisionError
from focal.models import utc_now
from focal.validation import check_limit, snapshot
from focal.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookEventType
from focal.webhooks.store import WebhookStore, check_delivery, check_endpoint, lease_taken_over


class InMemoryWebhookStore(WebhookStore):
    """Dicts by id; every method is synchronous inside, so each is atomic on the event loop."""

    def __init__(self) -> None:
        self._endpoints: dict[UUID, WebhookEndpoint] = {}
        self._deliveries: dict[UUID, WebhookDelivery] = {}

    def _endpoint(self, tenant_id: UUID, endpoint_id: UUID) -> WebhookEndpoint | None:
        endpoint = self._endpoints.get(endpoint_id)
        return endpoint if endpoint is not None and endpoint.tenant_id == tenant_id else None

    async def create_endpoint(self, endpoint: WebhookEndpoint) -> WebhookEndpoint:
        check_endpoint(endpoint)
        stored = snapshot(endpoint)
        if stored.id in self._endpoints:
            raise ConflictError(f"webhook endpoint {stored.id} already exists")
        stored.revision = 1
        stored.updated_at = utc_now()
        self._endpoints[stored.id] = stored
        return snapshot(stored)

    async def update_endpoint(self, endpoint: WebhookEndpoint, *, expected_revision: int) -> WebhookEndpoint:
        check_endpoint(endpoint)
        stored = snapshot(endpoint)
        current = self._endpoint(stored.tenant_id, stored.id)
        if current is None:
            raise NotFoundError(f"webhook endpoint {stored.id} not found")
        if current.revision != expected_revision:
            raise stale_revision("webhook endpoint", stored.id, current.revision, expected_revision)
        stored.revision = current.revision + 1
        stored.created_at = current.created_at
        stored.updated_at = utc_now()
        self._endpoints[stored.id] = stored
        return snapshot(stored)

    async def get_endpoint(self, tenant_id: UUID, endpoint_id: UUID) -> WebhookEndpoint | None:
        endpoint = self._endpoint(tenant_id, endpoint_id)
        return snapshot(endpoint) if endpoint is not None else None

    async def list_endpoints(
        self,
        tenant_id: UUID,
        *,
        event_type: WebhookEventType | None = None,
        enabled_only: bool = False,
        limit: int = 100,
    ) -> list[WebhookEndpoint]:
        check_limit(limit)
        found = [
            e
            for e in self._endpoints.values()
            if e.tenant_id == tenant_id
            and (event_type is None or event_type in e.event_types)
            and (e.enabled or not enabled_only)
        ]
        found.sort(key=lambda e: (e.created_at, e.id))
        return [snapshot(e) for e in found[:limit]]

    async def delete_endpoint(self, tenant_id: UUID, endpoint_id: UUID) -> bool:
        if self._endpoint(tenant_id, endpoint_id) is None:
            return False
        del self._endpoints[endpoint_id]
        for delivery_id in [d.id for d in self._deliveries.values() if d.endpoint_id == endpoint_id]:
            del self._deliveries[delivery_id]
        return True

    async def add_deliveries(self, deliveries: Sequence[WebhookDelivery]) -> None:
        for delivery in deliveries:
            check_delivery(delivery)
        stored = [snapshot(d) for d in deliveries]
        pairs = {(d.event_id, d.endpoint_id) for d in self._deliveries.values()}
        for delivery in stored:  # every check before the first insert: all or nothing
            if self._endpoint(delivery.tenant_id, delivery.endpoint_id) is None:
                raise NotFoundError(f"webhook endpoint {delivery.endpoint_id} not found")
            if delivery.id in self._deliveries or (delivery.event_id, delivery.endpoint_id) in pairs:
                raise ConflictError(f"webhook delivery {delivery.id} already exists")
            pairs.add((delivery.event_id, delivery.endpoint_id))
        for delivery in stored:
            self._deliveries[delivery.id] = delivery

    async def claim_due(self, *, now: datetime, lease_until: datetime, limit: int) -> list[WebhookDelivery]:
        check_limit(limit)
        due = [
            d
            for d in self._deliveries.values()
            if d.status is DeliveryStatus.PENDING
            and d.next_attempt_at is not None
            and d.next_attempt_at <= now
            and (d.lease_until is None or d.lease_until < now)
        ]
        due.sort(key=lambda d: (d.next_attempt_at, d.id))
        for delivery in due[:limit]:
            delivery.lease_until = lease_until
        return [snapshot(d) for d in due[:limit]]

    async def update_delivery(
        self, delivery: WebhookDelivery, *, held_lease: datetime | None = None
    ) -> WebhookDelivery:
        check_delivery(delivery)
        current = self._deliveries.get(delivery.id)
        if current is None or current.tenant_id != delivery.tenant_id:
            raise NotFoundError(f"webhook delivery {delivery.id} not found")
        if held_lease is not None and current.lease_until != held_lease:
            raise StaleRevisionError(lease_taken_over(delivery.id))
        stored = snapshot(current)
        for name in (
            "status",
            "attempts",
            "next_attempt_at",
            "lease_until",
            "last_status_code",
            "last_error",
        ):
            setattr(stored, name, getattr(delivery, name))
        stored.updated_at = utc_now()
        self._deliveries[stored.id] = stored
        return snapshot(stored)

    async def get_delivery(self, tenant_id: UUID, delivery_id: UUID) -> WebhookDelivery | None:
        delivery = self._deliveries.get(delivery_id)
        if delivery is None or delivery.tenant_id != tenant_id:
            return None
        return snapshot(delivery)

    async def list_deliveries(
        self, tenant_id: UUID, endpoint_id: UUID, *, limit: int = 100
    ) -> list[WebhookDelivery]:
        check_limit(limit)
        found = [
            d for d in self._deliveries.values() if d.tenant_id == tenant_id and d.endpoint_id == endpoint_id
        ]
        found.sort(key=lambda d: d.id)
        found.sort(key=lambda d: d.created_at, reverse=True)  # stable: id breaks ties
        return [snapshot(d) for d in found[:limit]]
