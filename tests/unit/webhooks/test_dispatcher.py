"""``WebhookDispatcher`` lifecycle against a real loopback receiver: shutdown leaves unfinished
deliveries to the sweep of another process, permanent failures stop at once, backoff is bounded."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace

import httpx
import pytest
from structlog.testing import capture_logs

from focal.audit.stores.inmemory import InMemoryAuditStore
from focal.errors import InvalidDataError
from focal.webhooks.dispatcher import ATTEMPT_EVENT, WebhookDispatcher, WebhookOptions
from focal.webhooks.inmemory import InMemoryWebhookStore
from focal.webhooks.models import DeliveryStatus, WebhookEndpoint, WebhookEventType
from focal.webhooks.signing import generate_secret
from tests.support import new_tenant
from tests.webhook_receiver import WebhookReceiver, serve_receiver

HANDOFF = WebhookEventType.SESSION_HANDOFF_REQUESTED.value
FAST = WebhookOptions(
    timeout_seconds=5, max_attempts=3, backoff_base_seconds=0.01, backoff_cap_seconds=0.02, allow_http=True
)


async def _setup(
    url: str, receiver: WebhookReceiver | None = None, **endpoint: object
) -> tuple[InMemoryWebhookStore, InMemoryAuditStore, WebhookEndpoint]:
    store, audit = InMemoryWebhookStore(), InMemoryAuditStore()
    created = await store.create_endpoint(
        WebhookEndpoint(
            tenant_id=new_tenant(), url=url, event_types=[HANDOFF], secret=generate_secret(), **endpoint
        )  # type: ignore[arg-type]
    )
    if receiver is not None:
        receiver.secret = created.secret
    return store, audit, created


async def test_shutdown_leaves_the_delivery_to_another_processs_sweep() -> None:
    receiver = WebhookReceiver(hold=threading.Event())
    assert receiver.hold is not None
    with serve_receiver(receiver) as url:
        store, audit, endpoint = await _setup(url, receiver)
        options = replace(FAST, lease_seconds=1.0, shutdown_grace_seconds=0)
        async with httpx.AsyncClient() as client_a, httpx.AsyncClient() as client_b:
            first = WebhookDispatcher(store, audit, client_a, options)
            (delivery,) = await first.emit(endpoint.tenant_id, HANDOFF, {"n": 1})
            assert await asyncio.to_thread(receiver.arrived.wait, 10)
            await first.aclose()  # the process stops: the attempt in flight is cancelled
            receiver.hold.set()
            pending = await store.get_delivery(endpoint.tenant_id, delivery.id)
            assert pending is not None and (pending.status, pending.attempts) == (DeliveryStatus.PENDING, 0)

            second = WebhookDispatcher(store, audit, client_b, options)
            assert await second.sweep_once() == 0  # still leased by the stopped process
            deadline = time.monotonic() + 10
            while await second.sweep_once() == 0:  # the lease runs out within a second
                assert time.monotonic() < deadline, "the delivery was never resumed"
                await asyncio.sleep(0.02)
            await second.wait_idle()
            await second.aclose()
    done = await store.get_delivery(endpoint.tenant_id, delivery.id)
    assert done is not None and (done.status, done.attempts) == (DeliveryStatus.DELIVERED, 1)
    received = receiver.snapshot()
    assert len(received) == 2  # at least once: the cancelled attempt had reached the receiver
    assert {r.headers["webhook-id"] for r in received} == {str(delivery.event_id)}
    assert all(r.signature_error is None for r in received)


async def test_a_process_that_stalled_past_its_lease_does_not_overwrite_the_new_holder() -> None:
    """Both attempts reach the receiver (at least once); only the process holding the lease now
    records its outcome: the stalled one's late write is refused and logged."""
    receiver = WebhookReceiver(hold=threading.Event())
    assert receiver.hold is not None
    with serve_receiver(receiver) as url:
        store, audit, endpoint = await _setup(url, receiver)
        options = replace(FAST, lease_seconds=1.0)
        async with httpx.AsyncClient() as client_a, httpx.AsyncClient() as client_b:
            stalled = WebhookDispatcher(store, audit, client_a, options)
            (delivery,) = await stalled.emit(endpoint.tenant_id, HANDOFF, {"n": 1})
            assert await asyncio.to_thread(receiver.arrived.wait, 10)  # its attempt hangs there
            other = WebhookDispatcher(store, audit, client_b, options)
            deadline = time.monotonic() + 10
            while await other.sweep_once() == 0:  # the stalled process's lease runs out
                assert time.monotonic() < deadline, "the delivery was never taken over"
                await asyncio.sleep(0.02)
            with capture_logs() as logs:
                receiver.hold.set()  # both attempts are answered now
                await stalled.wait_idle()
                await other.wait_idle()
            await stalled.aclose()
            await other.aclose()
    done = await store.get_delivery(endpoint.tenant_id, delivery.id)
    assert done is not None and (done.status, done.attempts) == (DeliveryStatus.DELIVERED, 1)
    assert len(receiver.snapshot()) == 2
    taken = [log for log in logs if log["event"] == "webhook delivery taken over"]
    assert [log["delivery_id"] for log in taken] == [str(delivery.id)]
    assert len(await audit.list_events(endpoint.tenant_id, event_type=ATTEMPT_EVENT)) == 1


@pytest.mark.parametrize("change", ["disable", "delete", "url_no_longer_allowed"])
async def test_an_endpoint_changed_before_the_attempt_gets_nothing(change: str) -> None:
    receiver = WebhookReceiver()
    with serve_receiver(receiver) as url:
        store, audit, endpoint = await _setup(url, receiver)
        options = FAST if change != "url_no_longer_allowed" else replace(FAST, allow_http=False)
        async with httpx.AsyncClient() as client:
            dispatcher = WebhookDispatcher(store, audit, client, options)
            (delivery,) = await dispatcher.emit(endpoint.tenant_id, HANDOFF, {"n": 1})
            # The delivery task has not run yet (emit only schedules it).
            if change == "disable":
                await store.update_endpoint(
                    endpoint.model_copy(update={"enabled": False}), expected_revision=1
                )
            elif change == "delete":
                await store.delete_endpoint(endpoint.tenant_id, endpoint.id)
            with capture_logs() as logs:
                await dispatcher.wait_idle()
            await dispatcher.aclose()
    assert receiver.snapshot() == []
    stored = await store.get_delivery(endpoint.tenant_id, delivery.id)
    if change == "delete":
        assert stored is None
        return
    assert stored is not None and (stored.status, stored.attempts) == (DeliveryStatus.FAILED, 1)
    failed = [log for log in logs if log["event"] == "webhook delivery failed"]
    assert [(log["log_level"], log["delivery_id"]) for log in failed] == [("error", str(delivery.id))]
    (attempt,) = await audit.list_events(endpoint.tenant_id, event_type=ATTEMPT_EVENT)
    assert attempt.event_data["outcome"] == "failed" and attempt.event_data["error"] == stored.last_error


async def test_nothing_is_written_without_an_enabled_endpoint_for_the_event() -> None:
    store, audit, endpoint = await _setup("https://hooks.example.com/h", enabled=False)
    async with httpx.AsyncClient() as client:
        dispatcher = WebhookDispatcher(store, audit, client, FAST)
        assert await dispatcher.emit(endpoint.tenant_id, HANDOFF, {}) == []
        assert await dispatcher.emit(new_tenant(), HANDOFF, {}) == []
        with pytest.raises(InvalidDataError):
            await dispatcher.emit(endpoint.tenant_id, "session.unknown", {})
        assert dispatcher.in_flight == 0
    assert await store.list_deliveries(endpoint.tenant_id, endpoint.id) == []


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    options = WebhookOptions(backoff_base_seconds=1, backoff_cap_seconds=5)
    for attempts, ceiling in ((1, 1), (2, 2), (3, 4), (4, 5), (10, 5)):
        waits = [options.backoff(attempts) for _ in range(200)]
        assert all(0 <= wait <= ceiling for wait in waits)
        assert max(waits) > ceiling / 2  # jittered over the whole range, not stuck at 0


def test_options_come_from_the_settings() -> None:
    from focal.settings import WebhookSettings

    options = WebhookOptions.from_settings(
        WebhookSettings(allowed_hosts=["Hooks.Example.com"], max_attempts=2)
    )
    assert (options.allowed_hosts, options.max_attempts) == (("hooks.example.com",), 2)


@pytest.mark.parametrize("url", ["https://hooks.example.com/h\t", "https://xn--zz.example.com/h"])
async def test_a_url_the_http_client_cannot_send_to_fails_the_delivery_at_once(url: str) -> None:
    """A URL urlsplit accepts but httpx refuses (a control character, a bad IDNA label) is a
    permanent failure, not an interruption that every sweep resumes without end."""
    store, audit, endpoint = await _setup(url)  # as stored before the URL check refused it
    async with httpx.AsyncClient() as client:
        dispatcher = WebhookDispatcher(store, audit, client, FAST)
        with capture_logs() as logs:
            (delivery,) = await dispatcher.emit(endpoint.tenant_id, HANDOFF, {"n": 1})
            await dispatcher.wait_idle()
        await dispatcher.aclose()
    stored = await store.get_delivery(endpoint.tenant_id, delivery.id)
    assert stored is not None and (stored.status, stored.attempts) == (DeliveryStatus.FAILED, 1)
    assert stored.last_error is not None and "malformed" in stored.last_error
    assert not [log for log in logs if log["event"] == "webhook delivery interrupted"]
