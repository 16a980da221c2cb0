"""Idempotency keys: one stored response per (tenant, route, key), replayed to retries.

``store.py`` is the interface and its rules, ``inmemory.py`` the reference, ``redis.py`` the
production backend (the session Redis, same durability checks). The HTTP side is
``focal/api/idempotency.py``.
"""

from focal.idempotency.store import (
    IdempotencyStore,
    Reservation,
    ReservationOutcome,
    StoredResponse,
)

__all__ = ["IdempotencyStore", "Reservation", "ReservationOutcome", "StoredResponse"]
