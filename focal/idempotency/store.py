"""The IdempotencyStore interface: reserve a key, then complete it with a response or release it.

A request carrying an ``Idempotency-Key`` is identified by ``(tenant_id, scope, key)``: the scope
is the route (method and path), so keys are per tenant and per route. Its ``fingerprint`` is a
digest of what the request asks for (its body); the same key with another fingerprint is a
client error, never a replay.

Rules every backend follows (proven by ``tests/contract/test_idempotency_store.py``):

- ``reserve`` on a free key stores it *in flight* for ``in_flight_seconds`` and returns
  ``STARTED`` with a fresh token: the caller runs the request. On a key in flight or completed
  with another fingerprint: ``MISMATCH``. In flight with the same fingerprint: ``IN_PROGRESS``
  (or ``STARTED`` again for the same reservation re-sent: the Redis client retries a command whose
  reply was lost). Completed with the same fingerprint: ``REPLAY`` with the stored response.
- ``complete`` stores the response for ``ttl_seconds`` if the token still holds the reservation
  (True), and changes nothing otherwise (False: the reservation expired and another request
  took the key). Completing twice with the same token is True and keeps the first response.
- ``release`` frees a reservation still held by the token (the request failed and must be
  retryable); a completed key or another holder's reservation is left alone (False).
- An expired key (in flight or completed) is free.
- Bad input (an empty, overlong or non-printable key; a status outside 100..599; a TTL <= 0) is an
  ``InvalidDataError`` and changes nothing.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from focal.errors import InvalidDataError

__all__ = [
    "MAX_KEY_CHARS",
    "IdempotencyStore",
    "Reservation",
    "ReservationOutcome",
    "StoredResponse",
    "check_key",
]

MAX_KEY_CHARS = 255
# Printable ASCII without spaces: what a header value carries safely, and what clients generate
# (UUIDs, ULIDs, hashes, channel message ids).
_KEY = re.compile(rf"^[\x21-\x7e]{{1,{MAX_KEY_CHARS}}}$")


@dataclass(frozen=True)
class StoredResponse:
    """What a replay answers: the status, the headers worth repeating, the exact body bytes."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class ReservationOutcome(StrEnum):
    STARTED = "started"  # the key is this caller's: run the request, then complete or release
    IN_PROGRESS = "in_progress"  # another request with this key and body is running
    MISMATCH = "mismatch"  # the key was used with another body
    REPLAY = "replay"  # the key's request completed: answer with ``response``


@dataclass(frozen=True)
class Reservation:
    outcome: ReservationOutcome
    token: str | None = None  # STARTED: proves the reservation to complete or release it
    response: StoredResponse | None = None  # REPLAY


def check_key(key: str) -> None:
    """An idempotency key: 1..255 printable ASCII characters, no spaces."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise InvalidDataError(
            f"an idempotency key is 1..{MAX_KEY_CHARS} printable ASCII characters without spaces"
        )


def check_reserve(scope: str, key: str, fingerprint: str, seconds: float) -> None:
    check_key(key)
    if not scope or not fingerprint:
        raise InvalidDataError("an idempotency scope and fingerprint must not be empty")
    check_seconds(seconds, "in_flight_seconds")


def check_response(response: StoredResponse, ttl_seconds: float) -> None:
    if not 100 <= response.status <= 599:
        raise InvalidDataError(f"HTTP status {response.status} is outside 100..599")
    check_seconds(ttl_seconds, "ttl_seconds")


def check_seconds(seconds: float, what: str) -> None:
    if not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds <= 0:
        raise InvalidDataError(f"{what} must be a finite number > 0, got {seconds!r}")


class IdempotencyStore(ABC):
    """See the module docstring for the rules."""

    @abstractmethod
    async def reserve(
        self, tenant_id: UUID, scope: str, key: str, fingerprint: str, *, in_flight_seconds: float
    ) -> Reservation: ...

    @abstractmethod
    async def complete(
        self,
        tenant_id: UUID,
        scope: str,
        key: str,
        token: str,
        response: StoredResponse,
        *,
        ttl_seconds: float,
    ) -> bool: ...

    @abstractmethod
    async def release(self, tenant_id: UUID, scope: str, key: str, token: str) -> bool: ...
