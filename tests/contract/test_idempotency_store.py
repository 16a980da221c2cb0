"""IdempotencyStore contract: every backend (in-memory, Redis, Redis Cluster) behaves the same.

Each test works in its own tenant and, for Redis, its own key prefix.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from uuid import uuid4

import pytest

from focal.errors import InvalidDataError
from focal.idempotency.inmemory import InMemoryIdempotencyStore
from focal.idempotency.redis import RedisIdempotencyStore
from focal.idempotency.store import IdempotencyStore, ReservationOutcome, StoredResponse
from tests.contract.redis_backends import (
    REDIS_BACKENDS,
    redis_client_for,
    redis_cluster_client,
    redis_cluster_nodes,
)
from tests.support import new_tenant

__all__ = ["redis_cluster_client", "redis_cluster_nodes"]  # fixtures

CHAT = "POST /v1/agents/a/chat"
HOUR = 3600.0
RESPONSE = StoredResponse(
    status=201, headers=(("content-type", "application/json"), ("etag", '"1"')), body=b'{"id": "x"}'
)


@pytest.fixture(params=REDIS_BACKENDS)
def store(request: pytest.FixtureRequest) -> Iterator[IdempotencyStore]:
    if request.param == "inmemory":
        yield InMemoryIdempotencyStore()
    else:
        client = redis_client_for(request, request.param)
        yield RedisIdempotencyStore(client, key_prefix=f"idem-{uuid4().hex[:8]}")


async def started_token(store: IdempotencyStore, tenant: object, key: str, fingerprint: str = "fp") -> str:
    reservation = await store.reserve(tenant, CHAT, key, fingerprint, in_flight_seconds=HOUR)  # type: ignore[arg-type]
    assert reservation.outcome is ReservationOutcome.STARTED
    assert reservation.token
    return reservation.token


async def poll_until_free(store: IdempotencyStore, tenant: object, key: str, bound: float = 5.0) -> str:
    """Reserve until the key is free again (it expires); the bound fails a key that never does."""
    deadline = time.monotonic() + bound
    while True:
        reservation = await store.reserve(tenant, CHAT, key, "fp", in_flight_seconds=HOUR)  # type: ignore[arg-type]
        if reservation.outcome is ReservationOutcome.STARTED:
            assert reservation.token
            return reservation.token
        assert time.monotonic() < deadline, f"key still {reservation.outcome} after {bound}s"
        await asyncio.sleep(0.01)


async def test_first_reservation_starts_and_a_second_is_in_progress(store: IdempotencyStore) -> None:
    tenant = new_tenant()
    await started_token(store, tenant, "k1")
    again = await store.reserve(tenant, CHAT, "k1", "fp", in_flight_seconds=HOUR)
    assert (again.outcome, again.token, again.response) == (ReservationOutcome.IN_PROGRESS, None, None)


async def test_completed_key_replays_the_stored_response(store: IdempotencyStore) -> None:
    tenant = new_tenant()
    token = await started_token(store, tenant, "k1")
    assert await store.complete(tenant, CHAT, "k1", token, RESPONSE, ttl_seconds=HOUR)
    for _ in range(2):  # replayed as often as asked
        replay = await store.reserve(tenant, CHAT, "k1", "fp", in_flight_seconds=HOUR)
        assert replay.outcome is ReservationOutcome.REPLAY
        assert replay.response == RESPONSE


async def test_binary_and_empty_bodies_replay_byte_for_byte(store: IdempotencyStore) -> None:
    tenant = new_tenant()
    for key, body in (("bin", bytes(range(256))), ("empty", b"")):
        token = await started_token(store, tenant, key)
        response = StoredResponse(status=204, headers=(), body=body)
        assert await store.complete(tenant, CHAT, key, token, response, ttl_seconds=HOUR)
        replay = await store.reserve(tenant, CHAT, key, "fp", in_flight_seconds=HOUR)
        assert replay.response == response


async def test_another_fingerprint_is_a_mismatch_in_flight_and_after(store: IdempotencyStore) -> None:
    tenant = new_tenant()
    token = await started_token(store, tenant, "k1", "body-a")
    in_flight = await store.reserve(tenant, CHAT, "k1", "body-b", in_flight_seconds=HOUR)
    assert in_flight.outcome is ReservationOutcome.MISMATCH
    await store.complete(tenant, CHAT, "k1", token, RESPONSE, ttl_seconds=HOUR)
    done = await store.reserve(tenant, CHAT, "k1", "body-b", in_flight_seconds=HOUR)
    assert (done.outcome, done.response) == (ReservationOutcome.MISMATCH, None)
    # The mismatch changed nothing: the original still replays.
    original = await store.reserve(tenant, CHAT, "k1", "body-a", in_flight_seconds=HOUR)
    assert original.response == RESPONSE


async def test_keys_are_per_tenant_and_per_scope(store: IdempotencyStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    token = await started_token(store, tenant, "shared")
    await store.complete(tenant, CHAT, "shared", token, RESPONSE, ttl_seconds=HOUR)
    assert (await store.reserve(other, CHAT, "shared", "fp", in_flight_seconds=HOUR)).outcome is (
        ReservationOutcome.STARTED
    )
    other_route = await store.reserve(tenant, "POST /v1/agents", "shared", "fp", in_flight_seconds=HOUR)
    assert other_route.outcome is ReservationOutcome.STARTED
    # The other tenant's and route's reservations did not touch the first one.
    assert (await store.reserve(tenant, CHAT, "shared", "fp", in_flight_seconds=HOUR)).response == RESPONSE


async def test_release_frees_the_key_and_only_for_its_holder(store: IdempotencyStore) -> None:
    tenant = new_tenant()
    token = await started_token(store, tenant, "k1")
    assert not await store.release(tenant, CHAT, "k1", "not-the-token")
    assert (await store.reserve(tenant, CHAT, "k1", "fp", in_flight_seconds=HOUR)).outcome is (
        ReservationOutcome.IN_PROGRESS
    )
    assert await store.release(tenant, CHAT, "k1", token)
    assert not await store.release(tenant, CHAT, "k1", token)  # nothing left to release
    second = await started_token(store, tenant, "k1", "another-body")  # free: any body may use it
    assert second != token


async def test_release_leaves_a_completed_key_alone(store: IdempotencyStore) -> None:
    tenant = new_tenant()
    token = await started_token(store, tenant, "k1")
    await store.complete(tenant, CHAT, "k1", token, RESPONSE, ttl_seconds=HOUR)
    assert not await store.release(tenant, CHAT, "k1", token)
    assert (await store.reserve(tenant, CHAT, "k1", "fp", in_flight_seconds=HOUR)).response == RESPONSE


async def test_complete_needs_the_holders_token_and_keeps_the_first_response(store: IdempotencyStore) -> None:
    tenant = new_tenant()
    token = await started_token(store, tenant, "k1")
    assert not await store.complete(tenant, CHAT, "k1", "stolen", RESPONSE, ttl_seconds=HOUR)
    assert (await store.reserve(tenant, CHAT, "k1", "fp", in_flight_seconds=HOUR)).outcome is (
        ReservationOutcome.IN_PROGRESS
    )
    assert await store.complete(tenant, CHAT, "k1", token, RESPONSE, ttl_seconds=HOUR)
    later = StoredResponse(status=200, headers=(), body=b"later")
    assert await store.complete(tenant, CHAT, "k1", token, later, ttl_seconds=HOUR)  # a re-send
    assert (await store.reserve(tenant, CHAT, "k1", "fp", in_flight_seconds=HOUR)).response == RESPONSE
    assert not await store.complete(tenant, CHAT, "unknown", token, RESPONSE, ttl_seconds=HOUR)


async def test_an_abandoned_reservation_expires_and_its_late_completion_is_refused(
    store: IdempotencyStore,
) -> None:
    tenant = new_tenant()
    first = await store.reserve(tenant, CHAT, "k1", "fp", in_flight_seconds=0.05)
    assert first.token
    second = await poll_until_free(store, tenant, "k1")
    # The first holder finishes late: its response must not replace the new holder's reservation.
    assert not await store.complete(tenant, CHAT, "k1", first.token, RESPONSE, ttl_seconds=HOUR)
    assert await store.complete(tenant, CHAT, "k1", second, RESPONSE, ttl_seconds=HOUR)


async def test_a_completed_key_expires_after_its_ttl(store: IdempotencyStore) -> None:
    tenant = new_tenant()
    token = await started_token(store, tenant, "k1")
    await store.complete(tenant, CHAT, "k1", token, RESPONSE, ttl_seconds=0.05)
    await poll_until_free(store, tenant, "k1")


async def test_concurrent_reservations_start_exactly_one(store: IdempotencyStore) -> None:
    tenant = new_tenant()
    outcomes = await asyncio.gather(
        *(store.reserve(tenant, CHAT, "race", "fp", in_flight_seconds=HOUR) for _ in range(20))
    )
    started = [r for r in outcomes if r.outcome is ReservationOutcome.STARTED]
    assert len(started) == 1
    assert {r.outcome for r in outcomes} == {ReservationOutcome.STARTED, ReservationOutcome.IN_PROGRESS}


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "caf\u00e9", "tab\there", "nul\x00"])
async def test_invalid_keys_are_refused_and_change_nothing(store: IdempotencyStore, key: str) -> None:
    tenant = new_tenant()
    with pytest.raises(InvalidDataError):
        await store.reserve(tenant, CHAT, key, "fp", in_flight_seconds=HOUR)
    with pytest.raises(InvalidDataError):
        await store.complete(tenant, CHAT, key, "t", RESPONSE, ttl_seconds=HOUR)
    with pytest.raises(InvalidDataError):
        await store.release(tenant, CHAT, key, "t")


async def test_a_key_of_255_printable_characters_is_accepted(store: IdempotencyStore) -> None:
    await started_token(store, new_tenant(), "~" * 255)


async def test_bad_response_or_ttl_is_refused_and_changes_nothing(store: IdempotencyStore) -> None:
    tenant = new_tenant()
    token = await started_token(store, tenant, "k1")
    for response, ttl in (
        (StoredResponse(status=99, headers=(), body=b""), HOUR),
        (StoredResponse(status=600, headers=(), body=b""), HOUR),
        (RESPONSE, 0.0),
        (RESPONSE, float("nan")),
    ):
        with pytest.raises(InvalidDataError):
            await store.complete(tenant, CHAT, "k1", token, response, ttl_seconds=ttl)
    with pytest.raises(InvalidDataError):
        await store.reserve(tenant, CHAT, "k2", "fp", in_flight_seconds=-1)
    with pytest.raises(InvalidDataError):
        await store.reserve(tenant, CHAT, "k2", "", in_flight_seconds=HOUR)
    assert (await store.reserve(tenant, CHAT, "k1", "fp", in_flight_seconds=HOUR)).outcome is (
        ReservationOutcome.IN_PROGRESS
    )
    assert (await store.reserve(tenant, CHAT, "k2", "fp", in_flight_seconds=HOUR)).outcome is (
        ReservationOutcome.STARTED
    )
