"""The PostgreSQL WebhookStore (asyncpg): tables ``webhook_endpoints`` and ``webhook_deliveries``
(revision 0009). Conditional updates are ``UPDATE ... WHERE revision = $n``; ``claim_due`` takes
rows with ``FOR UPDATE SKIP LOCKED``, so concurrent sweeps of several processes never claim the
same delivery."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from focal.alignment.stores.revisions import stale_revision
from focal.db.translate import translate_pg_errors
from focal.errors import NotFoundError, StaleRevisionError
from focal.models import utc_now
from focal.validation import check_limit
from focal.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEventType
from focal.webhooks.store import WebhookStore, check_delivery, check_endpoint, lease_taken_over

__all__ = ["PostgresWebhookStore"]

_ENDPOINT_COLUMNS = (
    "id, tenant_id, url, event_types, description, enabled, secret, revision, created_at, updated_at"
)
_DELIVERY_COLUMNS = (
    "id, tenant_id, endpoint_id, event_id, event_type, session_id, payload, status, attempts, "
    "next_attempt_at, lease_until, last_status_code, last_error, created_at, updated_at"
)
_CLAIMED_COLUMNS = ", ".join(f"d.{column}" for column in _DELIVERY_COLUMNS.split(", "))
_ENDPOINT_MESSAGES = {"webhook_endpoints_pkey": "webhook endpoint already exists"}
_DELIVERY_MESSAGES = {
    "webhook_deliveries_pkey": "webhook delivery already exists",
    "webhook_deliveries_event_endpoint_key": "the event was already delivered to this endpoint",
    "webhook_deliveries_endpoint_fkey": "webhook endpoint not found",
}


def _endpoint(row: asyncpg.Record) -> WebhookEndpoint:
    return WebhookEndpoint.model_validate(dict(row))


def _delivery(row: asyncpg.Record) -> WebhookDelivery:
    return WebhookDelivery.model_validate(dict(row))


def _delivery_values(d: WebhookDelivery) -> tuple[Any, ...]:
    return (
        d.id, d.tenant_id, d.endpoint_id, d.event_id, d.event_type.value, d.session_id, d.payload,
        d.status.value, d.attempts, d.next_attempt_at, d.lease_until, d.last_status_code, d.last_error,
        d.created_at, d.updated_at,
    )  # fmt: skip


class PostgresWebhookStore(WebhookStore):
    """Receives a pool made by ``focal.db.pool.create_pool``; never closes it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create_endpoint(self, endpoint: WebhookEndpoint) -> WebhookEndpoint:
        check_endpoint(endpoint)
        e = endpoint
        with translate_pg_errors(
            "create_webhook_endpoint", tenant_id=e.tenant_id, messages=_ENDPOINT_MESSAGES
        ):
            row = await self._pool.fetchrow(
                f"INSERT INTO webhook_endpoints ({_ENDPOINT_COLUMNS}) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9) "
                f"RETURNING {_ENDPOINT_COLUMNS}",
                e.id, e.tenant_id, e.url, [t.value for t in e.event_types], e.description, e.enabled,
                e.secret, e.created_at, utc_now(),
            )  # fmt: skip
        assert row is not None
        return _endpoint(row)

    async def update_endpoint(self, endpoint: WebhookEndpoint, *, expected_revision: int) -> WebhookEndpoint:
        check_endpoint(endpoint)
        e = endpoint
        with translate_pg_errors("update_webhook_endpoint", tenant_id=e.tenant_id):
            async with self._pool.acquire() as connection, connection.transaction():
                current = await connection.fetchval(
                    "SELECT revision FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
                    e.tenant_id,
                    e.id,
                )
                if current is None:
                    raise NotFoundError(f"webhook endpoint {e.id} not found")
                if current != expected_revision:
                    raise stale_revision("webhook endpoint", e.id, current, expected_revision)
                row = await connection.fetchrow(
                    "UPDATE webhook_endpoints SET url = $3, event_types = $4, description = $5, "
                    "enabled = $6, secret = $7, revision = revision + 1, updated_at = $8 "
                    f"WHERE tenant_id = $1 AND id = $2 RETURNING {_ENDPOINT_COLUMNS}",
                    e.tenant_id, e.id, e.url, [t.value for t in e.event_types], e.description,
                    e.enabled, e.secret, utc_now(),
                )  # fmt: skip
        assert row is not None
        return _endpoint(row)

    async def get_endpoint(self, tenant_id: UUID, endpoint_id: UUID) -> WebhookEndpoint | None:
        with translate_pg_errors("get_webhook_endpoint", tenant_id=tenant_id):
            row = await self._pool.fetchrow(
                f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2",
                tenant_id,
                endpoint_id,
            )
        return None if row is None else _endpoint(row)

    async def list_endpoints(
        self,
        tenant_id: UUID,
        *,
        event_type: WebhookEventType | None = None,
        enabled_only: bool = False,
        limit: int = 100,
    ) -> list[WebhookEndpoint]:
        check_limit(limit)
        with translate_pg_errors("list_webhook_endpoints", tenant_id=tenant_id):
            rows = await self._pool.fetch(
                f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 "
                "AND ($2::text IS NULL OR $2::text = ANY(event_types)) AND (enabled OR NOT $3) "
                "ORDER BY created_at, id LIMIT $4",
                tenant_id,
                event_type.value if event_type is not None else None,
                enabled_only,
                limit,
            )
        return [_endpoint(row) for row in rows]

    async def delete_endpoint(self, tenant_id: UUID, endpoint_id: UUID) -> bool:
        with translate_pg_errors("delete_webhook_endpoint", tenant_id=tenant_id):
            deleted = await self._pool.fetchval(
                "DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2 RETURNING id",
                tenant_id,
                endpoint_id,
            )
        return deleted is not None

    async def add_deliveries(self, deliveries: Sequence[WebhookDelivery]) -> None:
        for delivery in deliveries:
            check_delivery(delivery)
        if not deliveries:
            return
        tenant_id = deliveries[0].tenant_id
        with translate_pg_errors("add_webhook_deliveries", tenant_id=tenant_id, messages=_DELIVERY_MESSAGES):
            async with self._pool.acquire() as connection, connection.transaction():
                await connection.executemany(
                    f"INSERT INTO webhook_deliveries ({_DELIVERY_COLUMNS}) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                    [_delivery_values(d) for d in deliveries],
                )

    async def claim_due(self, *, now: datetime, lease_until: datetime, limit: int) -> list[WebhookDelivery]:
        check_limit(limit)
        with translate_pg_errors("claim_webhook_deliveries"):
            rows = await self._pool.fetch(
                "UPDATE webhook_deliveries AS d SET lease_until = $2 FROM ("
                "  SELECT id FROM webhook_deliveries WHERE status = 'PENDING' AND next_attempt_at <= $1 "
                "  AND (lease_until IS NULL OR lease_until < $1) "
                "  ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED"
                f") AS due WHERE d.id = due.id RETURNING {_CLAIMED_COLUMNS}",
                now,
                lease_until,
                limit,
            )
        return sorted((_delivery(row) for row in rows), key=lambda d: (d.next_attempt_at, d.id))

    async def update_delivery(
        self, delivery: WebhookDelivery, *, held_lease: datetime | None = None
    ) -> WebhookDelivery:
        check_delivery(delivery)
        d = delivery
        with translate_pg_errors("update_webhook_delivery", tenant_id=d.tenant_id):
            row = await self._pool.fetchrow(
                "UPDATE webhook_deliveries SET status = $3, attempts = $4, next_attempt_at = $5, "
                "lease_until = $6, last_status_code = $7, last_error = $8, updated_at = $9 "
                "WHERE tenant_id = $1 AND id = $2 "
                "AND ($10::timestamptz IS NULL OR lease_until IS NOT DISTINCT FROM $10) "
                f"RETURNING {_DELIVERY_COLUMNS}",
                d.tenant_id, d.id, d.status.value, d.attempts, d.next_attempt_at, d.lease_until,
                d.last_status_code, d.last_error, utc_now(), held_lease,
            )  # fmt: skip
        if row is None:
            if held_lease is not None and await self.get_delivery(d.tenant_id, d.id) is not None:
                raise StaleRevisionError(lease_taken_over(d.id))
            raise NotFoundError(f"webhook delivery {d.id} not found")
        return _delivery(row)

    async def get_delivery(self, tenant_id: UUID, delivery_id: UUID) -> WebhookDelivery | None:
        with translate_pg_errors("get_webhook_delivery", tenant_id=tenant_id):
            row = await self._pool.fetchrow(
                f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE tenant_id = $1 AND id = $2",
                tenant_id,
                delivery_id,
            )
        return None if row is None else _delivery(row)

    async def list_deliveries(
        self, tenant_id: UUID, endpoint_id: UUID, *, limit: int = 100
    ) -> list[WebhookDelivery]:
        check_limit(limit)
        with translate_pg_errors("list_webhook_deliveries", tenant_id=tenant_id):
            rows = await self._pool.fetch(
                f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE tenant_id = $1 "
                "AND endpoint_id = $2 ORDER BY created_at DESC, id LIMIT $3",
                tenant_id,
                endpoint_id,
                limit,
            )
        return [_delivery(row) for row in rows]
