"""Emitting webhook events and delivering them: after the turn, in the background, retried.

``WebhookDispatcher.emit`` is called once the write that caused the event is persisted (the
handoff turn's session and record). It writes one PENDING ``WebhookDelivery`` per enabled endpoint
of the tenant that takes the event (the outbox: from here on the event survives this process),
leased to this process, and starts a background task per delivery; it returns without waiting for
any of them, so a slow or failing receiver never delays or fails the request.

A delivery task POSTs the exact stored body, signed (``signing.py``), with the configured timeout
and without following redirects; the response body is never read. A 2xx delivers it. Anything
else (status, timeout, connection error) schedules the next attempt after an exponential backoff
with full jitter, up to ``max_attempts`` (then FAILED); an endpoint that was disabled, or whose URL
the current settings no longer allow, fails it at once. Every attempt updates the delivery row and
is recorded as an audit event ``webhook_delivery_attempted`` (attempt number, status code or
error, latency, outcome). Delivery is at least once: a receiver deduplicates on ``webhook-id``.

Process exit: ``aclose`` stops the sweep and gives in-flight deliveries ``shutdown_grace_seconds``
to finish, then cancels them. A cancelled delivery (or one whose process crashed) stays PENDING
with its lease; once the lease is over, the sweep of any Focal process (every
``sweep_interval_seconds``, ``start``) claims it and carries on from its attempt count. Only an
event whose deliveries were never written (the process died between the turn's writes and
``emit``) is lost; the turn's ``handoff_requested`` audit event still shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit
from uuid import UUID, uuid4

import httpx

from focal.audit.models import AuditEvent
from focal.audit.stores.store import AuditStore
from focal.errors import InvalidDataError, StaleRevisionError
from focal.logging import get_logger
from focal.models import JsonDict, utc_now
from focal.settings import WebhookSettings
from focal.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookEventType
from focal.webhooks.signing import signed_headers
from focal.webhooks.store import WebhookStore

__all__ = ["ATTEMPT_EVENT", "AttemptOutcome", "WebhookDispatcher", "WebhookOptions", "check_endpoint_url"]

_log = get_logger("focal.webhooks")

ATTEMPT_EVENT = "webhook_delivery_attempted"
USER_AGENT = "Focal-Webhooks/0.1"
MAX_ERROR_CHARS = 500
CLAIM_BATCH = 100


@dataclass(frozen=True)
class WebhookOptions:
    """``WebhookSettings`` as the dispatcher takes them (see focal/settings.py for each)."""

    timeout_seconds: float = 10.0
    max_attempts: int = 6
    backoff_base_seconds: float = 1.0
    backoff_cap_seconds: float = 300.0
    lease_seconds: float = 60.0
    sweep_interval_seconds: float = 15.0
    shutdown_grace_seconds: float = 5.0
    allow_http: bool = False
    allowed_hosts: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: WebhookSettings) -> WebhookOptions:
        values = settings.model_dump()
        values["allowed_hosts"] = tuple(host.lower() for host in settings.allowed_hosts)
        return cls(**values)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (full jitter)."""
        ceiling = min(self.backoff_cap_seconds, self.backoff_base_seconds * 2 ** (attempts - 1))
        return random.uniform(0, ceiling)


def check_endpoint_url(url: str, options: WebhookOptions) -> None:
    """An endpoint URL Focal may call: absolute http(s) with a host, https unless ``allow_http``,
    no credentials, and a host of ``allowed_hosts`` when that list is set. ``InvalidDataError``
    (with the setting to change) otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a malformed port
        # What urlsplit lets through but the HTTP client refuses at send time (a control
        # character, a host that is not valid IDNA) would fail every attempt: refuse it here.
        httpx.URL(url).host  # noqa: B018 (decoding the host is the check)
    except (ValueError, httpx.InvalidURL) as exc:  # IDNAError is a UnicodeError, a ValueError
        raise InvalidDataError(f"the webhook URL is malformed: {exc}") from exc
    del port
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidDataError("the webhook URL must be an absolute https URL with a host")
    if parts.scheme == "http" and not options.allow_http:
        raise InvalidDataError("the webhook URL must use https (FOCAL_WEBHOOKS__ALLOW_HTTP=true allows http)")
    if parts.username is not None or parts.password is not None:
        raise InvalidDataError("the webhook URL must not carry credentials (the signature authenticates us)")
    if options.allowed_hosts and parts.hostname.lower() not in options.allowed_hosts:
        raise InvalidDataError(f"the webhook host {parts.hostname!r} is not in FOCAL_WEBHOOKS__ALLOWED_HOSTS")


@dataclass(frozen=True)
class AttemptOutcome:
    status_code: int | None
    error: str | None
    latency_ms: float
    permanent: bool = False  # retrying cannot help (endpoint disabled, URL no longer allowed)

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookDispatcher:
    """One per process (``FocalServices.webhooks``). ``client`` is owned by the caller."""

    def __init__(
        self,
        store: WebhookStore,
        audit_store: AuditStore,
        client: httpx.AsyncClient,
        options: WebhookOptions,
        *,
        owns_client: bool = False,
    ) -> None:
        self._store = store
        self._audit = audit_store
        self._client = client
        self._owns_client = owns_client
        self.options = options
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls, settings: WebhookSettings, store: WebhookStore, audit_store: AuditStore
    ) -> WebhookDispatcher:
        """A dispatcher on its own HTTP client (no redirects), which ``aclose`` closes. The client
        opens no connection until a delivery is sent."""
        options = WebhookOptions.from_settings(settings)
        client = httpx.AsyncClient(follow_redirects=False, timeout=options.timeout_seconds)
        return cls(store, audit_store, client, options, owns_client=True)

    # --- emitting ---------------------------------------------------------------------------

    async def emit(
        self, tenant_id: UUID, event_type: str, data: JsonDict, *, session_id: UUID | None = None
    ) -> list[WebhookDelivery]:
        """Write the event's deliveries and start them in the background; returns them (none when
        no enabled endpoint takes the event). Raises only when the deliveries cannot be written."""
        try:
            kind = WebhookEventType(event_type)
        except ValueError as exc:
            raise InvalidDataError(f"unknown webhook event type {event_type!r}") from exc
        endpoints = await self._store.list_endpoints(
            tenant_id, event_type=kind, enabled_only=True, limit=1000
        )
        if not endpoints:
            return []
        event_id, now = uuid4(), utc_now()
        payload = json.dumps(
            {
                "id": str(event_id),
                "type": kind.value,
                "created_at": now.isoformat(),
                "tenant_id": str(tenant_id),
                "data": data,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        deliveries = [
            WebhookDelivery(
                tenant_id=tenant_id,
                endpoint_id=endpoint.id,
                event_id=event_id,
                event_type=kind,
                session_id=session_id,
                payload=payload,
                next_attempt_at=now,
                lease_until=now + timedelta(seconds=self.options.lease_seconds),
                created_at=now,
            )
            for endpoint in endpoints
        ]
        await self._store.add_deliveries(deliveries)
        for delivery in deliveries:
            self._spawn(delivery)
        return deliveries

    def _spawn(self, delivery: WebhookDelivery) -> None:
        task = asyncio.create_task(self._deliver(delivery), name=f"webhook-delivery-{delivery.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- delivering -------------------------------------------------------------------------

    async def _deliver(self, delivery: WebhookDelivery) -> None:
        try:
            while True:
                endpoint = await self._store.get_endpoint(delivery.tenant_id, delivery.endpoint_id)
                if endpoint is None:
                    return  # deleted: its deliveries went with it
                outcome = await self._attempt(endpoint, delivery)
                delivery, wait = await self._record(delivery, outcome)
                if wait is None:
                    return
                await asyncio.sleep(wait)  # the backoff before the next attempt
        except asyncio.CancelledError:
            raise  # shutdown: the delivery stays PENDING and leased; a sweep resumes it
        except Exception as exc:  # a store outage: the lease runs out and a sweep resumes it
            _log.error(
                "webhook delivery interrupted",
                tenant_id=str(delivery.tenant_id),
                delivery_id=str(delivery.id),
                error=repr(exc),
            )

    async def _attempt(self, endpoint: WebhookEndpoint, delivery: WebhookDelivery) -> AttemptOutcome:
        if not endpoint.enabled:
            return AttemptOutcome(None, "the endpoint is disabled", 0.0, permanent=True)
        try:
            check_endpoint_url(endpoint.url, self.options)
        except InvalidDataError as exc:
            return AttemptOutcome(None, str(exc), 0.0, permanent=True)
        body = delivery.payload.encode()
        headers = {
            **signed_headers(endpoint.secret, str(delivery.event_id), int(time.time()), body),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        started = time.perf_counter()
        try:
            # The response body is never read: a receiver cannot make us buffer anything.
            async with self._client.stream(
                "POST", endpoint.url, content=body, headers=headers, timeout=self.options.timeout_seconds
            ) as response:
                status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
            return AttemptOutcome(None, error, _elapsed_ms(started))
        return AttemptOutcome(status, None if 200 <= status < 300 else f"HTTP {status}", _elapsed_ms(started))

    async def _record(
        self, delivery: WebhookDelivery, outcome: AttemptOutcome
    ) -> tuple[WebhookDelivery, float | None]:
        """Write the attempt (delivery row, then audit event); return the delivery and the wait
        before the next attempt (None: no further attempt)."""
        attempts = delivery.attempts + 1
        wait: float | None = None
        if outcome.delivered:
            status = DeliveryStatus.DELIVERED
        elif outcome.permanent or attempts >= self.options.max_attempts:
            status = DeliveryStatus.FAILED
        else:
            status, wait = DeliveryStatus.PENDING, self.options.backoff(attempts)
        next_at = utc_now() + timedelta(seconds=wait) if wait is not None else None
        progressed = delivery.model_copy(
            update={
                "attempts": attempts,
                "status": status,
                "last_status_code": outcome.status_code,
                "last_error": outcome.error,
                "next_attempt_at": next_at,
                # Held through the wait: no sweep takes a delivery this process will retry.
                "lease_until": next_at + timedelta(seconds=self.options.lease_seconds) if next_at else None,
            }
        )
        try:
            saved = await self._store.update_delivery(progressed, held_lease=delivery.lease_until)
        except StaleRevisionError:
            # This process stalled past its lease and a sweep gave the delivery to another one,
            # whose attempts stand; this attempt was made (the receiver dedupes by webhook-id).
            _log.warning(
                "webhook delivery taken over",
                tenant_id=str(delivery.tenant_id),
                delivery_id=str(delivery.id),
                status_code=outcome.status_code,
            )
            return delivery, None
        if status is DeliveryStatus.FAILED:  # an operator must hear of an event nobody received
            _log.error(
                "webhook delivery failed",
                tenant_id=str(saved.tenant_id),
                delivery_id=str(saved.id),
                endpoint_id=str(saved.endpoint_id),
                event_type=saved.event_type.value,
                attempts=attempts,
                status_code=outcome.status_code,
                error=outcome.error,
            )
        await self._audit_attempt(saved, outcome)
        return saved, wait

    async def _audit_attempt(self, delivery: WebhookDelivery, outcome: AttemptOutcome) -> None:
        result = {DeliveryStatus.DELIVERED: "delivered", DeliveryStatus.FAILED: "failed"}
        event = AuditEvent(
            tenant_id=delivery.tenant_id,
            session_id=delivery.session_id,
            event_type=ATTEMPT_EVENT,
            event_data={
                "delivery_id": str(delivery.id),
                "endpoint_id": str(delivery.endpoint_id),
                "event_id": str(delivery.event_id),
                "event_type": delivery.event_type.value,
                "attempt": delivery.attempts,
                "status_code": outcome.status_code,
                "error": outcome.error,
                "latency_ms": round(outcome.latency_ms, 3),
                "outcome": result.get(delivery.status, "retrying"),
            },
        )
        try:
            await self._audit.save_event(event)
        except Exception as exc:  # the delivery row holds the attempt too
            _log.error("webhook attempt not audited", delivery_id=str(delivery.id), error=repr(exc))

    # --- lifecycle --------------------------------------------------------------------------

    async def sweep_once(self) -> int:
        """Claim due deliveries whose lease is over (another process died, or this one restarted)
        and start them; returns how many."""
        now = utc_now()
        claimed = await self._store.claim_due(
            now=now, lease_until=now + timedelta(seconds=self.options.lease_seconds), limit=CLAIM_BATCH
        )
        for delivery in claimed:
            self._spawn(delivery)
        return len(claimed)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except Exception as exc:
                _log.warning("webhook sweep failed", error=repr(exc))
            await asyncio.sleep(self.options.sweep_interval_seconds)

    def start(self) -> None:
        """Start the periodic sweep (idempotent)."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="webhook-sweep")

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def wait_idle(self) -> None:
        """Wait until every delivery task started so far (and any they lead to) has ended."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop sweeping; give in-flight deliveries the grace period, then cancel them (they stay
        PENDING and are resumed by a sweep once their lease is over); close an owned client."""
        try:
            await self._stop()
        finally:
            if self._owns_client:
                await self._client.aclose()

    async def stop_sweeping(self) -> None:
        """Stop the periodic sweep (deliveries in flight go on)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def _stop(self) -> None:
        await self.stop_sweeping()
        pending = list(self._tasks)
        if pending:
            _, unfinished = await asyncio.wait(pending, timeout=self.options.shutdown_grace_seconds)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
            if unfinished:
                _log.warning("webhook deliveries left for a later sweep", count=len(unfinished))


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
