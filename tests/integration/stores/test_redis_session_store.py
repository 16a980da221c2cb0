"""Redis-only behaviour of ``RedisSessionStore``: tiers, TTLs, indexes, crashes, typed errors.

The shared semantics are in ``tests/contract/test_session_store.py``. Short TTLs (1-2 s) make
expiry observable; tests wait for it by polling with a deadline, never by a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from redis.asyncio import Redis
from redis.cluster import key_slot

from focal.conversation.models import Session
from focal.conversation.stores.redis import RedisSessionStore
from focal.errors import (
    ConfigurationError,
    ConflictError,
    InvalidDataError,
    StoreError,
)
from tests.integration.stores.redis_cluster import redis_cluster_client, redis_cluster_nodes
from tests.integration.stores.redis_support import (
    any_client,
    index_keys,
    make_store,
    session,
    wait_until,
    with_step,
)
from tests.support import new_tenant

# Fixtures (``any_client`` requests the cluster ones through ``getfixturevalue``).
__all__ = ["any_client", "redis_cluster_client", "redis_cluster_nodes"]

pytestmark = pytest.mark.redis


# --- tiers ----------------------------------------------------------------------------------


async def test_save_writes_both_tiers_with_the_version_header(redis_client: Redis) -> None:
    store = make_store(redis_client)
    saved = await store.save(session(new_tenant()))
    hot = await redis_client.get(store.keys.hot(saved.session_id))
    persist = await redis_client.get(store.keys.persist(saved.session_id))
    assert hot == persist and persist is not None
    assert persist.startswith(f'{{"version":1,"tenant_id":"{saved.tenant_id}",'.encode())
    assert Session.model_validate(json.loads(persist)) == saved
    assert key_slot(store.keys.hot(saved.session_id).encode()) == key_slot(
        store.keys.persist(saved.session_id).encode()
    )


async def test_hot_expiry_demotes_without_loss_and_access_promotes(redis_client: Redis) -> None:
    store = make_store(redis_client, hot_ttl_seconds=1)
    tenant = new_tenant()
    saved = await store.save(session(tenant))
    hot_key = store.keys.hot(saved.session_id)
    assert 0 < await redis_client.pttl(hot_key) <= 1000

    async def hot_gone() -> bool:
        return not await redis_client.exists(hot_key)

    await wait_until(hot_gone, "the hot key to expire")
    assert await redis_client.exists(store.keys.persist(saved.session_id))
    assert await store.get(tenant, saved.session_id) == saved
    assert 0 < await redis_client.pttl(hot_key) <= 1000  # promoted again, with the hot TTL


async def test_get_slides_the_hot_ttl(any_client: Any) -> None:
    store = make_store(any_client, hot_ttl_seconds=600)
    saved = await store.save(session(new_tenant()))
    hot_key = store.keys.hot(saved.session_id)
    await any_client.pexpire(hot_key, 5000)
    await store.get(saved.tenant_id, saved.session_id)
    assert await any_client.pttl(hot_key) > 5000


async def test_hot_ttl_never_outlives_max_age(any_client: Any) -> None:
    store = make_store(any_client, hot_ttl_seconds=600, max_age_seconds=30)
    tenant = new_tenant()
    saved = await store.save(session(tenant))
    hot_key, persist_key = store.keys.hot(saved.session_id), store.keys.persist(saved.session_id)
    assert 0 < await any_client.pttl(persist_key) <= 30_000
    persist_at = await any_client.pexpiretime(persist_key)
    # Absolute expiry times (PEXPIRETIME), so the reads need not happen at the same instant. The
    # hot TTL (600 s) is longer than what is left of the max age: the hot key expires exactly
    # with the persistent one, after a creation, a later save, a get and a promotion alike.
    assert await any_client.pexpiretime(hot_key) == persist_at
    saved = await store.save(saved)
    assert await any_client.pexpiretime(hot_key) == persist_at == await any_client.pexpiretime(persist_key)
    assert await store.get(tenant, saved.session_id) == saved
    assert await any_client.pexpiretime(hot_key) == persist_at
    assert await store.demote_to_persistent(tenant, saved.session_id)
    assert await store.promote_to_hot(tenant, saved.session_id)
    assert await any_client.pexpiretime(hot_key) == persist_at


async def test_hot_copy_without_its_persistent_copy_is_gone(any_client: Any) -> None:
    """The persistent copy evicted (an evicting maxmemory-policy) or expired while the hot copy
    lives: the session no longer exists, so its hot copy is deleted, never returned or re-armed."""
    store = make_store(any_client, hot_ttl_seconds=600)
    tenant = new_tenant()
    saved = await store.save(with_step(tenant))
    hot_key, persist_key = store.keys.hot(saved.session_id), store.keys.persist(saved.session_id)
    await any_client.delete(persist_key)
    assert await any_client.exists(hot_key)
    assert await store.get(tenant, saved.session_id) is None
    assert not await any_client.exists(hot_key)  # deleted, not re-armed with the hot TTL
    assert await store.get(tenant, saved.session_id) is None
    assert await store.promote_to_hot(tenant, saved.session_id) is False
    assert await store.delete(tenant, saved.session_id) is False
    assert await store.list_by_agent(tenant, saved.agent_id) == []
    assert await store.get_by_channel(tenant, saved.channel, saved.user_channel_id) is None
    # The id can be used again from version 0, as for any session that is gone.
    again = await store.save(session(tenant, session_id=saved.session_id))
    assert again.version == 1 and await store.get(tenant, saved.session_id) == again
    # The same for a hot copy left alone with a demote in between.
    await any_client.delete(persist_key)
    assert await store.demote_to_persistent(tenant, saved.session_id) is False
    assert not await any_client.exists(hot_key)


async def test_promote_and_demote_respect_tenant_and_existence(any_client: Any) -> None:
    store = make_store(any_client)
    tenant, other = new_tenant(), new_tenant()
    saved = await store.save(session(tenant))
    hot_key = store.keys.hot(saved.session_id)
    assert await store.demote_to_persistent(other, saved.session_id) is False
    assert await any_client.exists(hot_key)
    assert await store.demote_to_persistent(tenant, saved.session_id) is True
    assert not await any_client.exists(hot_key)
    assert await store.promote_to_hot(other, saved.session_id) is False
    assert not await any_client.exists(hot_key)
    assert await store.promote_to_hot(tenant, saved.session_id) is True
    assert await any_client.get(hot_key) == await any_client.get(store.keys.persist(saved.session_id))
    assert await store.promote_to_hot(tenant, uuid4()) is False
    assert await store.demote_to_persistent(tenant, uuid4()) is False
    assert await store.get(tenant, saved.session_id) == saved


# --- max age --------------------------------------------------------------------------------


async def test_max_age_counts_from_created_at_and_is_not_extended_by_saves(redis_client: Redis) -> None:
    store = make_store(redis_client, max_age_seconds=600)
    tenant = new_tenant()
    created = datetime.now(UTC) - timedelta(seconds=300)
    saved = await store.save(session(tenant, created_at=created))
    persist_key = store.keys.persist(saved.session_id)
    first_ttl = await redis_client.pttl(persist_key)
    assert 290_000 < first_ttl <= 300_000
    await store.save(saved)
    assert 0 < await redis_client.pttl(persist_key) <= first_ttl  # -1 would be "no expiry"
    too_old = session(tenant, created_at=datetime.now(UTC) - timedelta(seconds=601))
    with pytest.raises(InvalidDataError):
        await store.save(too_old)
    assert not await redis_client.exists(store.keys.persist(too_old.session_id))
    assert await store.list_by_agent(tenant, too_old.agent_id) == []


async def test_past_max_age_a_session_is_gone_from_every_tier_and_index(redis_client: Redis) -> None:
    store = make_store(redis_client, max_age_seconds=1)
    tenant = new_tenant()
    saved = await store.save(with_step(tenant))
    keys = [
        store.keys.hot(saved.session_id),
        store.keys.persist(saved.session_id),
        store.keys.registry(tenant),
        *index_keys(store, saved),
    ]
    assert await redis_client.exists(*keys) == len(keys)

    async def all_gone() -> bool:
        return await redis_client.exists(*keys) == 0

    await wait_until(all_gone, "every key of the session to expire")
    assert await store.get(tenant, saved.session_id) is None
    assert await store.list_by_agent(tenant, saved.agent_id) == []
    assert await store.get_by_channel(tenant, saved.channel, saved.user_channel_id) is None


async def test_purge_expired_removes_stale_index_entries(any_client: Any) -> None:
    # max age 3 s: the index keys (TTL 3 s from the last write) outlive the short-lived session
    # (created 2.5 s ago, so about 0.5 s left) by a wide margin.
    store = make_store(any_client, max_age_seconds=3)
    tenant, agent, customer = new_tenant(), uuid4(), uuid4()
    now = datetime.now(UTC)
    short_lived = await store.save(
        with_step(tenant, agent_id=agent, created_at=now - timedelta(milliseconds=2500))
    )
    short_lived = short_lived.model_copy(update={"customer_profile_id": customer})
    short_lived = await store.save(short_lived)  # now in the agent, customer, channel and step indexes
    survivor = await store.save(session(tenant, agent_id=agent, customer_profile_id=customer))

    async def short_lived_gone() -> bool:
        return not await any_client.exists(store.keys.persist(short_lived.session_id))

    await wait_until(short_lived_gone, "the short-lived session to pass its max age")
    removed = await store.purge_expired(tenant)
    # agent, customer, channel and step entries of short_lived; the first customer index it was
    # saved under holds one more entry.
    assert removed == 5
    member = str(short_lived.session_id).encode()
    assert await any_client.zrange(store.keys.agent(tenant, agent), 0, -1) == [
        str(survivor.session_id).encode()
    ]
    assert await any_client.zscore(store.keys.customer(tenant, customer), member) is None
    assert await store.purge_expired(tenant) == 0
    assert await store.list_by_agent(tenant, agent) == [survivor]


# --- indexes --------------------------------------------------------------------------------


async def test_delete_keeps_indexes_consistent(any_client: Any) -> None:
    store = make_store(any_client)
    saved = await store.save(with_step(new_tenant()))
    member = str(saved.session_id)
    keys = index_keys(store, saved)
    for key in keys:
        assert await any_client.zscore(key, member) is not None
    assert await store.delete(saved.tenant_id, saved.session_id)
    for key in keys:
        assert await any_client.zscore(key, member) is None
    assert not await any_client.exists(store.keys.hot(saved.session_id), store.keys.persist(saved.session_id))


async def test_readers_drop_entries_of_vanished_sessions(any_client: Any) -> None:
    store = make_store(any_client)
    tenant = new_tenant()
    gone = await store.save(with_step(tenant))
    kept = await store.save(session(tenant, agent_id=gone.agent_id))
    await any_client.delete(store.keys.hot(gone.session_id), store.keys.persist(gone.session_id))
    agent, _, _, step = index_keys(store, gone)
    assert await store.list_by_agent(tenant, gone.agent_id) == [kept]
    assert await any_client.zscore(agent, str(gone.session_id)) is None
    assert gone.active_scenario_id and gone.active_scenario_version
    assert await store.find_sessions_by_step_hash(tenant, gone.active_scenario_id, 1, "h1") == []
    assert await any_client.zscore(step, str(gone.session_id)) is None


async def test_index_keys_live_in_the_tenant_slot(redis_client: Redis) -> None:
    store = make_store(redis_client)
    saved = await store.save(with_step(new_tenant()))
    slots = {key_slot(k.encode()) for k in [*index_keys(store, saved), store.keys.registry(saved.tenant_id)]}
    assert len(slots) == 1


async def test_key_prefix_separates_deployments(redis_client: Redis) -> None:
    first, second = make_store(redis_client), make_store(redis_client)
    saved = await first.save(session(new_tenant()))
    assert await second.get(saved.tenant_id, saved.session_id) is None
    assert await second.list_by_agent(saved.tenant_id, saved.agent_id) == []
    assert await first.get(saved.tenant_id, saved.session_id) == saved


async def test_works_with_decoded_responses(redis_url: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        store = make_store(client)
        tenant = new_tenant()
        saved = await store.save(with_step(tenant))
        assert await store.get(tenant, saved.session_id) == saved
        assert await store.list_by_agent(tenant, saved.agent_id) == [saved]
        assert await store.get_by_channel(tenant, saved.channel, saved.user_channel_id) == saved
        assert saved.active_scenario_id
        assert await store.find_sessions_by_step_hash(tenant, saved.active_scenario_id, 1, "h1") == [saved]
        assert await store.purge_expired(tenant) == 0
        assert await store.delete(tenant, saved.session_id)
    finally:
        await client.aclose()


# --- concurrency ----------------------------------------------------------------------------


async def test_hundred_concurrent_read_modify_save_loops_lose_no_increment(redis_client: Redis) -> None:
    # 100 loops share 64 connections and retry ~n²/2 times: on a loaded machine one operation may
    # wait beyond the default 5 s bound for a connection. The bound is not what this test is about.
    store = make_store(redis_client, operation_timeout_seconds=60.0)
    tenant = new_tenant()
    base = await store.save(session(tenant))
    conflicts = 0

    async def increment() -> None:
        nonlocal conflicts
        while True:
            current = await store.get(tenant, base.session_id)
            assert current is not None
            current.turn_count += 1
            try:
                await store.save(current)
                return
            except ConflictError:
                conflicts += 1

    await asyncio.gather(*(increment() for _ in range(100)))
    final = await store.get(tenant, base.session_id)
    assert final is not None and final.turn_count == 100 and final.version == 101
    assert conflicts > 0  # the loops really raced


# --- bad input and typed errors ---------------------------------------------------------------


async def test_oversized_payload_is_refused_before_writing(any_client: Any) -> None:
    store = make_store(any_client, max_session_bytes=4096)
    tenant = new_tenant()
    big = session(tenant, variables={"blob": "x" * 5000})
    with pytest.raises(InvalidDataError):
        await store.save(big)
    assert not await any_client.exists(store.keys.persist(big.session_id), store.keys.hot(big.session_id))
    saved = await store.save(session(tenant))
    before = await any_client.get(store.keys.persist(saved.session_id))
    with pytest.raises(InvalidDataError):
        await store.save(saved.model_copy(update={"variables": {"blob": "x" * 5000}}))
    assert await any_client.get(store.keys.persist(saved.session_id)) == before
    assert await store.get(tenant, saved.session_id) == saved


async def test_stale_version_and_other_tenant_leave_every_key_untouched(any_client: Any) -> None:
    store = make_store(any_client)
    tenant = new_tenant()
    first = await store.save(session(tenant))
    second = await store.save(first)
    keys = [store.keys.hot(first.session_id), store.keys.persist(first.session_id)]
    before = [await any_client.get(k) for k in keys]
    with pytest.raises(ConflictError):
        await store.save(first)
    with pytest.raises(ConflictError):
        await store.save(second.model_copy(update={"tenant_id": new_tenant()}))
    assert [await any_client.get(k) for k in keys] == before
    assert await store.list_by_agent(tenant, first.agent_id) == [second]


async def test_a_corrupt_stored_header_is_reported_alike_by_every_call(any_client: Any) -> None:
    """get, save and delete (and promote/demote) all report a stored copy without the version
    header as the same ``StoreError`` and change nothing: never "absent" for one call and
    "conflict" for another."""
    store = make_store(any_client)
    tenant = new_tenant()
    saved = await store.save(session(tenant))
    tier_keys = [store.keys.hot(saved.session_id), store.keys.persist(saved.session_id)]
    for key in tier_keys:
        await any_client.set(key, b'{"not":"a session"}', keepttl=True)
    before = [await any_client.get(k) for k in tier_keys]
    calls = {
        "get": lambda: store.get(tenant, saved.session_id),
        "get by another tenant": lambda: store.get(new_tenant(), saved.session_id),
        "save": lambda: store.save(saved),
        "delete": lambda: store.delete(tenant, saved.session_id),
        "promote": lambda: store.promote_to_hot(tenant, saved.session_id),
        "demote": lambda: store.demote_to_persistent(tenant, saved.session_id),
    }
    for name, call in calls.items():
        with pytest.raises(StoreError, match="unreadable header") as raised:
            await call()
        assert type(raised.value) is StoreError, name
    assert [await any_client.get(k) for k in tier_keys] == before


def test_invalid_options_are_configuration_errors() -> None:
    client = Redis()  # never used: the constructor refuses first
    for options in (
        {"key_prefix": "a{b}"},
        {"key_prefix": ""},
        {"hot_ttl_seconds": 0},
        {"hot_ttl_seconds": float("nan")},
        {"hot_ttl_seconds": float("inf")},
        {"max_age_seconds": -1},
        {"max_age_seconds": float("nan")},
        {"operation_timeout_seconds": float("inf")},
        {"max_concurrent_operations": 0},
    ):
        with pytest.raises(ConfigurationError):
            RedisSessionStore(client, **options)
