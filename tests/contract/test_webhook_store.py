"""WebhookStore contract: the in-memory reference and PostgreSQL behave the same."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from focal.errors import ConflictError, InvalidDataError, NotFoundError, StaleRevisionError
from focal.models import utc_now
from focal.webhooks.inmemory import InMemoryWebhookStore
from focal.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookEventType
from focal.webhooks.store import WebhookStore
from tests.support import new_tenant

HANDOFF = WebhookEventType.SESSION_HANDOFF_REQUESTED
SECRET = "whsec_" + "A" * 44


@pytest.fixture(params=["inmemory", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> WebhookStore:
    if request.param == "inmemory":
        return InMemoryWebhookStore()
    from focal.webhooks.postgres import PostgresWebhookStore

    return PostgresWebhookStore(request.getfixturevalue("pg_pool"))


def endpoint(tenant_id: UUID, **fields: Any) -> WebhookEndpoint:
    values: dict[str, Any] = {
        "url": "https://hooks.example.com/focal",
        "event_types": [HANDOFF],
        "secret": SECRET,
    }
    values.update(fields)
    return WebhookEndpoint(tenant_id=tenant_id, **values)


def delivery(target: WebhookEndpoint, **fields: Any) -> WebhookDelivery:
    values: dict[str, Any] = {
        "event_id": uuid4(),
        "event_type": HANDOFF,
        "payload": '{"type": "session.handoff_requested"}',
        "next_attempt_at": utc_now(),
    }
    values.update(fields)
    return WebhookDelivery(tenant_id=target.tenant_id, endpoint_id=target.id, **values)


# --- endpoints ----------------------------------------------------------------------------------


async def test_create_then_get_returns_revision_one_and_the_secret(store: WebhookStore) -> None:
    tenant = new_tenant()
    created = await store.create_endpoint(endpoint(tenant, revision=7, description="ops"))
    assert created.revision == 1
    assert (created.url, created.secret, created.description) == (
        "https://hooks.example.com/focal",
        SECRET,
        "ops",
    )
    assert await store.get_endpoint(tenant, created.id) == created


async def test_endpoints_are_invisible_to_other_tenants(store: WebhookStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    created = await store.create_endpoint(endpoint(tenant))
    assert await store.get_endpoint(other, created.id) is None
    assert await store.list_endpoints(other) == []
    assert await store.delete_endpoint(other, created.id) is False
    with pytest.raises(NotFoundError):
        await store.update_endpoint(created.model_copy(update={"tenant_id": other}), expected_revision=1)
    with pytest.raises(ConflictError):  # the id is taken, in any tenant
        await store.create_endpoint(endpoint(other, id=created.id))
    assert await store.get_endpoint(tenant, created.id) == created


async def test_update_is_conditional_on_the_revision(store: WebhookStore) -> None:
    tenant = new_tenant()
    created = await store.create_endpoint(endpoint(tenant))
    changed = created.model_copy(update={"url": "https://other.example.com/", "enabled": False})
    updated = await store.update_endpoint(changed, expected_revision=1)
    assert (updated.revision, updated.url, updated.enabled) == (2, "https://other.example.com/", False)
    assert updated.created_at == created.created_at and updated.updated_at >= created.updated_at
    with pytest.raises(StaleRevisionError):
        await store.update_endpoint(
            created.model_copy(update={"url": "https://lost.example.com/"}), expected_revision=1
        )
    assert await store.get_endpoint(tenant, created.id) == updated


async def test_concurrent_updates_of_one_revision_let_exactly_one_win(store: WebhookStore) -> None:
    tenant = new_tenant()
    created = await store.create_endpoint(endpoint(tenant))
    outcomes = await asyncio.gather(
        *(
            store.update_endpoint(created.model_copy(update={"description": f"d{i}"}), expected_revision=1)
            for i in range(5)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(o, WebhookEndpoint) for o in outcomes) == 1
    assert all(isinstance(o, WebhookEndpoint | StaleRevisionError) for o in outcomes)
    stored = await store.get_endpoint(tenant, created.id)
    assert stored is not None and stored.revision == 2


async def test_list_filters_by_event_type_and_enabled_in_creation_order(store: WebhookStore) -> None:
    tenant = new_tenant()
    first = await store.create_endpoint(endpoint(tenant, created_at=utc_now() - timedelta(seconds=2)))
    disabled = await store.create_endpoint(
        endpoint(tenant, enabled=False, created_at=utc_now() - timedelta(seconds=1))
    )
    assert [e.id for e in await store.list_endpoints(tenant)] == [first.id, disabled.id]
    assert [e.id for e in await store.list_endpoints(tenant, event_type=HANDOFF, enabled_only=True)] == [
        first.id
    ]
    assert [e.id for e in await store.list_endpoints(tenant, limit=1)] == [first.id]
    with pytest.raises(InvalidDataError):
        await store.list_endpoints(tenant, limit=0)


async def test_delete_removes_the_endpoint_and_its_deliveries(store: WebhookStore) -> None:
    tenant = new_tenant()
    created = await store.create_endpoint(endpoint(tenant))
    pending = delivery(created)
    await store.add_deliveries([pending])
    assert await store.delete_endpoint(tenant, created.id) is True
    assert await store.get_endpoint(tenant, created.id) is None
    assert await store.get_delivery(tenant, pending.id) is None
    assert await store.delete_endpoint(tenant, created.id) is False


async def test_text_no_store_can_keep_is_refused_and_changes_nothing(store: WebhookStore) -> None:
    tenant = new_tenant()
    with pytest.raises(InvalidDataError):
        await store.create_endpoint(endpoint(tenant, description="nul\x00here"))
    assert await store.list_endpoints(tenant) == []
    created = await store.create_endpoint(endpoint(tenant))
    with pytest.raises(InvalidDataError):
        await store.add_deliveries([delivery(created), delivery(created, payload='{"x": "\x00"}')])
    assert await store.list_deliveries(tenant, created.id) == []


# --- deliveries ---------------------------------------------------------------------------------


async def test_deliveries_are_added_all_or_nothing_once_per_event_and_endpoint(store: WebhookStore) -> None:
    tenant = new_tenant()
    target = await store.create_endpoint(endpoint(tenant))
    first = delivery(target)
    await store.add_deliveries([first])
    assert await store.get_delivery(tenant, first.id) == first
    again = delivery(target, event_id=first.event_id)
    fresh = delivery(target)
    with pytest.raises(ConflictError):
        await store.add_deliveries([fresh, again])
    with pytest.raises(NotFoundError):  # another tenant's endpoint, or none
        await store.add_deliveries([delivery(target).model_copy(update={"tenant_id": new_tenant()})])
    assert [d.id for d in await store.list_deliveries(tenant, target.id)] == [first.id]


async def test_claim_takes_due_unleased_pending_deliveries_once(store: WebhookStore) -> None:
    tenant = new_tenant()
    target = await store.create_endpoint(endpoint(tenant))
    now = utc_now()
    due = delivery(target, next_attempt_at=now - timedelta(seconds=1))
    later = delivery(target, next_attempt_at=now + timedelta(hours=1))
    leased = delivery(target, next_attempt_at=now, lease_until=now + timedelta(minutes=1))
    done = delivery(target, status=DeliveryStatus.DELIVERED, next_attempt_at=now)
    await store.add_deliveries([due, later, leased, done])
    lease = now + timedelta(minutes=5)
    mine = [d for d in await store.claim_due(now=now, lease_until=lease, limit=1000) if d.tenant_id == tenant]
    assert [(d.id, d.lease_until) for d in mine] == [(due.id, lease)]
    again = await store.claim_due(now=now, lease_until=lease, limit=1000)
    assert due.id not in {d.id for d in again}  # leased now
    expired = await store.claim_due(now=now + timedelta(minutes=6), lease_until=lease, limit=1000)
    assert {due.id, leased.id} <= {d.id for d in expired}  # both leases are over by then


async def test_concurrent_claims_never_share_a_delivery(store: WebhookStore) -> None:
    tenant = new_tenant()
    target = await store.create_endpoint(endpoint(tenant))
    now = utc_now() - timedelta(seconds=1)
    created = [delivery(target, next_attempt_at=now) for _ in range(12)]
    await store.add_deliveries(created)
    claims = await asyncio.gather(
        *(
            store.claim_due(now=utc_now(), lease_until=utc_now() + timedelta(minutes=5), limit=4)
            for _ in range(6)
        )
    )
    ours = [d.id for claim in claims for d in claim if d.tenant_id == tenant]
    assert len(ours) == len(set(ours))
    assert set(ours) == {d.id for d in created}


async def test_update_records_progress_and_lists_newest_first(store: WebhookStore) -> None:
    tenant = new_tenant()
    target = await store.create_endpoint(endpoint(tenant))
    old = delivery(target, created_at=utc_now() - timedelta(seconds=5))
    new = delivery(target)
    await store.add_deliveries([old, new])
    progressed = old.model_copy(
        update={
            "status": DeliveryStatus.DELIVERED,
            "attempts": 2,
            "last_status_code": 204,
            "last_error": None,
            "next_attempt_at": None,
            "lease_until": None,
            "payload": "ignored: the body never changes",
        }
    )
    saved = await store.update_delivery(progressed)
    assert (saved.status, saved.attempts, saved.last_status_code, saved.payload) == (
        DeliveryStatus.DELIVERED,
        2,
        204,
        old.payload,
    )
    assert await store.get_delivery(tenant, old.id) == saved
    assert [d.id for d in await store.list_deliveries(tenant, target.id)] == [new.id, old.id]
    assert await store.get_delivery(new_tenant(), old.id) is None
    assert await store.list_deliveries(new_tenant(), target.id) == []
    with pytest.raises(NotFoundError):
        await store.update_delivery(progressed.model_copy(update={"tenant_id": new_tenant()}))
    with pytest.raises(NotFoundError):
        await store.update_delivery(delivery(target))  # never added


async def test_an_update_under_a_lease_taken_over_is_refused_and_changes_nothing(store: WebhookStore) -> None:
    """A process stalled past its lease: a sweep gave the delivery to another process. The stalled
    one's late write (``held_lease`` = its old lease) must not overwrite the new holder's progress."""
    tenant = new_tenant()
    target = await store.create_endpoint(endpoint(tenant))
    now = utc_now() - timedelta(seconds=1)
    first_lease = now + timedelta(minutes=1)
    created = delivery(target, next_attempt_at=now, lease_until=first_lease)
    await store.add_deliveries([created])
    later = now + timedelta(minutes=2)  # the first lease is over
    taken = [
        d for d in await store.claim_due(now=later, lease_until=later + timedelta(minutes=1), limit=1000)
    ]
    (second,) = [d for d in taken if d.id == created.id]

    done = {"attempts": 1, "status": DeliveryStatus.DELIVERED, "lease_until": None}
    late = created.model_copy(update=done)
    with pytest.raises(StaleRevisionError):
        await store.update_delivery(late, held_lease=first_lease)
    stored = await store.get_delivery(tenant, created.id)
    assert stored is not None and (stored.status, stored.attempts) == (DeliveryStatus.PENDING, 0)
    assert stored.lease_until == second.lease_until

    progressed = second.model_copy(
        update={"attempts": 1, "status": DeliveryStatus.DELIVERED, "lease_until": None}
    )
    saved = await store.update_delivery(progressed, held_lease=second.lease_until)
    assert (saved.status, saved.attempts, saved.lease_until) == (DeliveryStatus.DELIVERED, 1, None)
    gone = delivery(target)
    with pytest.raises(NotFoundError):
        await store.update_delivery(gone, held_lease=first_lease)
