"""Redis-only behaviour of the session indexes: verification, ordering by save, bounded size.

The indexes are hints: every entry is checked against the session it names before it is
returned. These tests write index entries the store would never write (another tenant's session,
an update arriving late) and check that readers still answer right, that saves keep the indexes
bounded, and that ``purge_expired`` cleans what saves do not touch.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from focal.conversation.models import SessionStatus
from focal.conversation.stores.redis_scripts import INDEX_SESSION
from focal.conversation.stores.session_codec import epoch_micros
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

__all__ = ["any_client", "redis_cluster_client", "redis_cluster_nodes"]

pytestmark = pytest.mark.redis


async def test_after_the_hot_key_expired_the_indexes_still_find_the_session(any_client: Any) -> None:
    store = make_store(any_client, hot_ttl_seconds=1)
    tenant = new_tenant()
    saved = await store.save(with_step(tenant))
    hot_key = store.keys.hot(saved.session_id)

    async def hot_gone() -> bool:
        return not await any_client.exists(hot_key)

    await wait_until(hot_gone, "the hot key to expire")
    assert await store.list_by_agent(tenant, saved.agent_id) == [saved]
    assert saved.customer_profile_id is not None and saved.active_scenario_id is not None
    assert await store.list_by_customer(tenant, saved.customer_profile_id) == [saved]
    assert await store.get_by_channel(tenant, saved.channel, saved.user_channel_id) == saved
    assert await store.find_sessions_by_step_hash(tenant, saved.active_scenario_id, 1, "h1") == [saved]
    assert await store.purge_expired(tenant) == 0  # a demoted session is not an expired one
    for key in index_keys(store, saved):
        assert await any_client.zscore(key, str(saved.session_id)) is not None
    assert not await any_client.exists(hot_key)  # lists read the persistent copy, no promotion


async def test_an_index_update_of_an_older_save_never_overwrites_a_newer_one(any_client: Any) -> None:
    """On a cluster the index update of a save runs after the session script, so the updates of
    two saves can arrive in either order. Replaying the older save's update after the newer one
    (its tick and its last activity) changes no score."""
    store = make_store(any_client)
    tenant = new_tenant()
    first = await store.save(with_step(tenant))
    keys = index_keys(store, first)
    member = str(first.session_id)
    first_tick = await any_client.zscore(keys[2], member)
    second = await store.save(first)
    newer = [await any_client.zscore(key, member) for key in keys]
    assert newer[2] > first_tick and newer[0] == epoch_micros(second.last_activity_at)
    all_keys, by_activity = store.keys.index_keys_of(first, str(tenant))
    await INDEX_SESSION(
        any_client, len(all_keys), *all_keys,
        member, epoch_micros(first.last_activity_at), by_activity, 60_000, 60_000_000, int(first_tick),
    )  # fmt: skip
    assert [await any_client.zscore(key, member) for key in keys] == newer
    other = await store.save(session(tenant, channel=first.channel, user_channel_id=first.user_channel_id))
    await INDEX_SESSION(
        any_client, len(all_keys), *all_keys,
        member, epoch_micros(second.last_activity_at), by_activity, 60_000, 60_000_000, int(newer[2]),
    )  # fmt: skip
    # A late update of an earlier save does not make that session "the latest" of its identity.
    assert await store.get_by_channel(tenant, first.channel, first.user_channel_id) == other


async def test_purge_expired_forgets_index_keys_that_expired(any_client: Any) -> None:
    store = make_store(any_client, max_age_seconds=60)
    tenant = new_tenant()
    kept = await store.save(with_step(tenant))
    expired = await store.save(session(tenant))
    expired_keys = [
        store.keys.agent(tenant, expired.agent_id),
        store.keys.channel(tenant, expired.channel, expired.user_channel_id),
    ]
    registry = store.keys.registry(tenant)
    for key in expired_keys:
        assert await any_client.zscore(registry, key) is not None
    await any_client.delete(*expired_keys)  # as if their TTL had run out
    await store.purge_expired(tenant)
    for key in expired_keys:
        assert await any_client.zscore(registry, key) is None
    for key in index_keys(store, kept):
        assert await any_client.zscore(registry, key) is not None
    assert await store.list_by_agent(tenant, kept.agent_id) == [kept]


async def test_an_entry_naming_another_tenants_session_is_never_listed(any_client: Any) -> None:
    """Entries of tenant A's indexes that name tenant B's sessions (a bug or a crafted write) are
    never returned to A, on any read path, and are dropped as they are met."""
    store = make_store(any_client)
    tenant, other = new_tenant(), new_tenant()
    mine = await store.save(with_step(tenant))
    theirs = await store.save(
        with_step(
            other,
            agent_id=mine.agent_id,
            customer_profile_id=mine.customer_profile_id,
            channel=mine.channel,
            user_channel_id=mine.user_channel_id,
            active_scenario_id=mine.active_scenario_id,
        )
    )
    intruder = str(theirs.session_id)
    for key in index_keys(store, mine):  # above every entry of A, by score
        await any_client.zadd(key, {intruder: 2**52})
    assert mine.customer_profile_id is not None and mine.active_scenario_id is not None
    assert await store.list_by_agent(tenant, mine.agent_id) == [mine]
    assert await store.list_by_customer(tenant, mine.customer_profile_id) == [mine]
    assert await store.get_by_channel(tenant, mine.channel, mine.user_channel_id) == mine
    assert await store.find_sessions_by_step_hash(tenant, mine.active_scenario_id, 1, "h1") == [mine]
    for key in index_keys(store, mine):
        assert await any_client.zscore(key, intruder) is None
    assert await store.get_by_channel(other, theirs.channel, theirs.user_channel_id) == theirs


async def test_indexes_stay_bounded_for_an_agent_that_is_always_active(any_client: Any) -> None:
    """Index keys of an active agent are rewritten (and their TTL renewed) by every save, so they
    never expire; each save trims the entries more than the max age old from the keys it
    touches, and the registry of index keys likewise. Old sessions' entries go without any
    reader or purge."""
    store = make_store(any_client, max_age_seconds=1)
    tenant, agent, customer = new_tenant(), uuid4(), uuid4()
    shared = {"active_scenario_id": uuid4(), "customer_profile_id": customer, "agent_id": agent}
    old = [await store.save(with_step(tenant, **shared, user_channel_id=f"old-{n}")) for n in range(19)]
    old.append(await store.save(with_step(tenant, **shared, user_channel_id="kept")))
    assert await any_client.zcard(store.keys.agent(tenant, agent)) == 20
    assert await any_client.zcard(store.keys.registry(tenant)) == 23  # agent, customer, step, 20 channels
    # Other sessions of this agent keep renewing the indexes' TTL; take the TTL away instead of
    # writing them, so nothing but the trimming of the next save can shrink these keys.
    for key in [*index_keys(store, old[-1]), store.keys.registry(tenant)]:
        assert await any_client.persist(key)

    async def all_expired() -> bool:
        return not await any_client.exists(*(store.keys.persist(s.session_id) for s in old))

    await wait_until(all_expired, "the first sessions to pass their max age")
    fresh = await store.save(with_step(tenant, **shared, user_channel_id="kept"))
    for key in index_keys(store, fresh):
        assert await any_client.zrange(key, 0, -1) == [str(fresh.session_id).encode()], key
    registry = await any_client.zrange(store.keys.registry(tenant), 0, -1)
    assert sorted(k.decode() for k in registry) == sorted(index_keys(store, fresh))
    assert await store.list_by_agent(tenant, agent) == [fresh]


async def test_lists_follow_last_activity_after_a_writer_with_a_fast_clock(
    any_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session saved by a process whose clock ran an hour ahead, then by one with the right
    clock: its last activity does not go back (the later save is later), so the list order, the
    index scores and the data agree, and ``limit`` cuts the same list."""
    store = make_store(any_client)
    tenant, agent = new_tenant(), uuid4()
    ahead = datetime.now(UTC) + timedelta(hours=1)
    monkeypatch.setattr("focal.conversation.stores.redis.utc_now", lambda: ahead)
    skewed = await store.save(session(tenant, agent_id=agent))
    monkeypatch.undo()
    resaved = await store.save(skewed.model_copy(update={"status": SessionStatus.IDLE}))
    assert resaved.last_activity_at > skewed.last_activity_at
    other = await store.save(session(tenant, agent_id=agent))
    listed = await store.list_by_agent(tenant, agent)
    assert listed == [resaved, other]
    assert await store.list_by_agent(tenant, agent, limit=1) == [resaved]
    score = await any_client.zscore(store.keys.agent(tenant, agent), str(resaved.session_id))
    assert score == epoch_micros(resaved.last_activity_at)
