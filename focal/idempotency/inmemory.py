"""The in-memory reference IdempotencyStore (one process; ``storage=memory`` and tests)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from uuid import UUID, uuid4

from focal.idempotency.store import (
    IdempotencyStore,
    Reservation,
    ReservationOutcome,
    StoredResponse,
    check_key,
    check_reserve,
    check_response,
)


@dataclass
class _Entry:
    fingerprint: str
    token: str
    expires_at: float  # time.monotonic()
    response: StoredResponse | None = None  # None while in flight


class InMemoryIdempotencyStore(IdempotencyStore):
    """Keys in a dict; every operation is synchronous inside, so it is atomic on the event loop."""

    # Expired entries are dropped when touched, and all of them every this many reservations, so
    # keys nobody retries do not accumulate in a long-running process.
    PURGE_EVERY = 1000

    def __init__(self) -> None:
        self._entries: dict[tuple[UUID, str, str], _Entry] = {}
        self._reservations = 0

    def _purge_expired(self) -> None:
        now = time.monotonic()
        for slot in [slot for slot, entry in self._entries.items() if entry.expires_at <= now]:
            del self._entries[slot]

    def _live(self, slot: tuple[UUID, str, str]) -> _Entry | None:
        entry = self._entries.get(slot)
        if entry is not None and entry.expires_at <= time.monotonic():
            del self._entries[slot]
            return None
        return entry

    async def reserve(
        self, tenant_id: UUID, scope: str, key: str, fingerprint: str, *, in_flight_seconds: float
    ) -> Reservation:
        check_reserve(scope, key, fingerprint, in_flight_seconds)
        self._reservations += 1
        if self._reservations % self.PURGE_EVERY == 0:
            self._purge_expired()
        slot = (tenant_id, scope, key)
        entry = self._live(slot)
        if entry is None:
            token = uuid4().hex
            self._entries[slot] = _Entry(fingerprint, token, time.monotonic() + in_flight_seconds)
            return Reservation(ReservationOutcome.STARTED, token=token)
        if entry.fingerprint != fingerprint:
            return Reservation(ReservationOutcome.MISMATCH)
        if entry.response is None:
            return Reservation(ReservationOutcome.IN_PROGRESS)
        return Reservation(ReservationOutcome.REPLAY, response=entry.response)

    async def complete(
        self,
        tenant_id: UUID,
        scope: str,
        key: str,
        token: str,
        response: StoredResponse,
        *,
        ttl_seconds: float,
    ) -> bool:
        check_key(key)
        check_response(response, ttl_seconds)
        entry = self._live((tenant_id, scope, key))
        if entry is None or entry.token != token:
            return False
        if entry.response is None:
            entry.response = response
            entry.expires_at = time.monotonic() + ttl_seconds
        return True

    async def release(self, tenant_id: UUID, scope: str, key: str, token: str) -> bool:
        check_key(key)
        slot = (tenant_id, scope, key)
        entry = self._live(slot)
        if entry is None or entry.token != token or entry.response is not None:
            return False
        del self._entries[slot]
        return True
