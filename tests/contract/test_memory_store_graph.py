"""MemoryStore contract, knowledge graph: entities, relationships, traversal, customer erasure.

Backends and builders: ``tests/contract/memory_backends.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from focal.errors import ConflictError, InvalidDataError, NotFoundError
from focal.memory.stores.store import MemoryStore
from focal.models import utc_now
from tests.contract.memory_backends import (
    add_entities,
    ids,
    make_edge,
    make_entity,
    make_episode,
    memory_store_fixture,  # noqa: F401 - the parametrised fixture
)
from tests.support import new_tenant

# --- entities -----------------------------------------------------------------------------------


async def test_add_and_get_entity(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    entity = make_entity(
        tenant,
        agent,
        "Ada Lovelace",
        customer_profile_id=uuid4(),
        canonical_name="ada lovelace",
        attributes={"role": "analyst", "languages": ["en", "fr"]},
    )
    assert await store.add_entity(entity) == entity.id
    assert await store.get_entity(tenant, entity.id) == entity
    assert await store.get_entity(new_tenant(), entity.id) is None
    assert await store.get_entity(tenant, uuid4()) is None


async def test_add_entity_with_existing_id_conflicts_and_keeps_the_original(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    entity = make_entity(tenant, agent, "original")
    await store.add_entity(entity)
    with pytest.raises(ConflictError):
        await store.add_entity(entity.model_copy(update={"name": "changed"}))
    with pytest.raises(ConflictError):
        await store.add_entity(entity.model_copy(update={"tenant_id": new_tenant()}))
    assert await store.get_entity(tenant, entity.id) == entity


@pytest.mark.parametrize(
    "bad",
    [{"created_at": datetime(2026, 1, 1)}, {"attributes": {"id": uuid4()}}],
    ids=["naive-datetime", "attributes-not-json"],
)
async def test_invalid_entity_is_refused_and_nothing_is_stored(
    store: MemoryStore, bad: dict[str, Any]
) -> None:
    tenant, agent = new_tenant(), uuid4()
    entity = make_entity(tenant, agent, "bad").model_copy(update=bad)  # skips pydantic's validation
    with pytest.raises(InvalidDataError):
        await store.add_entity(entity)
    assert await store.get_entity(tenant, entity.id) is None
    assert await store.get_entities(tenant, agent) == []


async def test_entities_are_copied_in_and_out(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    entity = make_entity(tenant, agent, "copy", attributes={"list": [1]})
    await store.add_entity(entity)
    expected = entity.model_copy(deep=True)
    entity.attributes["list"].append(2)
    fetched = await store.get_entity(tenant, entity.id)
    assert fetched == expected
    assert fetched is not None
    fetched.attributes["list"].append(3)
    (listed,) = await store.get_entities(tenant, agent)
    listed.attributes["list"].append(4)
    assert await store.get_entity(tenant, entity.id) == expected


async def test_get_entities_orders_by_name_then_id_and_filters(store: MemoryStore) -> None:
    tenant, agent, customer = new_tenant(), uuid4(), uuid4()
    beta = make_entity(tenant, agent, "beta", entity_type="PRODUCT")
    upper_alpha = make_entity(tenant, agent, "Alpha", customer_profile_id=customer)
    twins = [make_entity(tenant, agent, "alpha", customer_profile_id=customer) for _ in range(3)]
    other_agent = make_entity(tenant, uuid4(), "aaa")
    other_tenant = make_entity(new_tenant(), agent, "aaa")
    for entity in (beta, *twins, upper_alpha, other_agent, other_tenant):
        await store.add_entity(entity)
    expected_order = [upper_alpha.id, *sorted(ids(twins)), beta.id]  # code point order, then id
    assert ids(await store.get_entities(tenant, agent)) == expected_order
    assert ids(await store.get_entities(tenant, agent, limit=2)) == expected_order[:2]
    assert ids(await store.get_entities(tenant, agent, entity_type="PRODUCT")) == [beta.id]
    assert ids(await store.get_entities(tenant, agent, customer_profile_id=customer)) == expected_order[:4]
    assert await store.get_entities(tenant, agent, entity_type="PLACE") == []
    assert await store.get_entities(new_tenant(), agent) == []


@pytest.mark.parametrize("limit", [0, -1, 1001])
async def test_get_entities_rejects_bad_limits(store: MemoryStore, limit: int) -> None:
    with pytest.raises(InvalidDataError):
        await store.get_entities(new_tenant(), uuid4(), limit=limit)


# --- relationships and traversal ----------------------------------------------------------------


async def test_add_relationship_needs_both_entities_in_the_same_tenant(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    a, b = await add_entities(store, tenant, agent, "a", "b")
    (foreign,) = await add_entities(store, new_tenant(), agent, "foreign")
    ghost = make_entity(tenant, agent, "never stored")
    for source, target in ((a, ghost), (ghost, b), (a, foreign), (foreign, a)):
        with pytest.raises(NotFoundError):
            await store.add_relationship(make_edge(tenant, source, target))
    assert await store.traverse_from_entities(tenant, [a.id, b.id], max_depth=5) == []
    edge = make_edge(tenant, a, b, confidence=0.4, metadata={"source": "turn 3"})
    assert await store.add_relationship(edge) == edge.id
    assert await store.traverse_from_entities(tenant, [a.id]) == [edge]


async def test_add_relationship_with_existing_id_or_bad_window_is_refused(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    a, b, c = await add_entities(store, tenant, agent, "a", "b", "c")
    edge = make_edge(tenant, a, b)
    await store.add_relationship(edge)
    with pytest.raises(ConflictError):
        await store.add_relationship(edge.model_copy(update={"target_entity_id": c.id}))
    now = utc_now()
    with pytest.raises(InvalidDataError):
        await store.add_relationship(
            make_edge(tenant, a, c, valid_from=now, valid_to=now - timedelta(seconds=1))
        )
    assert await store.traverse_from_entities(tenant, [a.id, c.id], max_depth=5) == [edge]


async def test_traversal_follows_both_directions_by_depth_then_id(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    a, b, c, d, e = await add_entities(store, tenant, agent, "a", "b", "c", "d", "e")
    ab = make_edge(tenant, a, b)
    ca = make_edge(tenant, c, a)  # points at the start entity: still followed
    bd = make_edge(tenant, b, d)
    ed = make_edge(tenant, e, d)
    for edge in (ab, ca, bd, ed):
        await store.add_relationship(edge)

    depth_one = await store.traverse_from_entities(tenant, [a.id], max_depth=1)
    assert ids(depth_one) == sorted([ab.id, ca.id])
    depth_two = await store.traverse_from_entities(tenant, [a.id])
    assert ids(depth_two) == [*sorted([ab.id, ca.id]), bd.id]
    depth_three = await store.traverse_from_entities(tenant, [a.id], max_depth=3)
    assert ids(depth_three) == [*sorted([ab.id, ca.id]), bd.id, ed.id]
    from_two_starts = await store.traverse_from_entities(tenant, [a.id, e.id], max_depth=1)
    assert ids(from_two_starts) == sorted([ab.id, ca.id, ed.id])


async def test_traversal_is_cycle_safe_and_returns_each_edge_once(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    a, b, c, d = await add_entities(store, tenant, agent, "a", "b", "c", "d")
    ring = [make_edge(tenant, a, b), make_edge(tenant, b, c), make_edge(tenant, c, a)]
    parallel = make_edge(tenant, b, a, "WORKS_WITH")  # a second edge between a and b
    loop = make_edge(tenant, c, c, "SELF")
    tail = make_edge(tenant, c, d)
    for edge in (*ring, parallel, loop, tail):
        await store.add_relationship(edge)
    found = await store.traverse_from_entities(tenant, [a.id], max_depth=5)
    assert len(found) == 6
    assert set(ids(found)) == {*ids(ring), parallel.id, loop.id, tail.id}
    depth_one = sorted([ring[0].id, ring[2].id, parallel.id])
    assert ids(found)[:3] == depth_one
    assert ids(found)[3:] == sorted([ring[1].id, loop.id, tail.id])
    # every start entity is at depth 0, so all six edges touch one at depth 1; duplicates are harmless
    from_all = await store.traverse_from_entities(tenant, [a.id, b.id, c.id, a.id], max_depth=5)
    assert ids(from_all) == sorted(ids(found))


async def test_traversal_filters_types_and_validity(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    now = utc_now()
    a, b, c, d = await add_entities(store, tenant, agent, "a", "b", "c", "d")
    knows = make_edge(tenant, a, b, "KNOWS")
    likes = make_edge(tenant, b, c, "LIKES")
    knows_far = make_edge(tenant, c, d, "KNOWS")
    expired = make_edge(
        tenant, a, d, "KNOWS", valid_from=now - timedelta(days=10), valid_to=now - timedelta(days=5)
    )
    for edge in (knows, likes, knows_far, expired):
        await store.add_relationship(edge)
    # only KNOWS edges are walked, so c (behind a LIKES edge) is never reached
    assert ids(
        await store.traverse_from_entities(tenant, [a.id], relationship_types=["KNOWS"], max_depth=5)
    ) == [knows.id]
    both_types = await store.traverse_from_entities(
        tenant, [a.id], relationship_types=["KNOWS", "LIKES"], max_depth=5
    )
    assert ids(both_types) == [knows.id, likes.id, knows_far.id]
    past = await store.traverse_from_entities(tenant, [a.id], max_depth=1, as_of=now - timedelta(days=7))
    assert ids(past) == [expired.id]  # the others did not exist yet (valid_from = now)
    assert await store.traverse_from_entities(tenant, [a.id], relationship_types=["UNKNOWN"]) == []


async def test_traversal_is_tenant_isolated_and_copies(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    a, b = await add_entities(store, tenant, agent, "a", "b")
    edge = make_edge(tenant, a, b, metadata={"k": [1]})
    await store.add_relationship(edge)
    assert await store.traverse_from_entities(new_tenant(), [a.id, b.id]) == []
    assert await store.traverse_from_entities(tenant, []) == []
    assert await store.traverse_from_entities(tenant, [uuid4()]) == []
    expected = edge.model_copy(deep=True)
    edge.metadata["k"].append(2)
    (found,) = await store.traverse_from_entities(tenant, [a.id])
    assert found == expected
    found.metadata["k"].append(3)
    assert await store.traverse_from_entities(tenant, [a.id]) == [expected]


@pytest.mark.parametrize("depth", [0, -1, 6])
async def test_traversal_rejects_depth_outside_one_to_five(store: MemoryStore, depth: int) -> None:
    with pytest.raises(InvalidDataError):
        await store.traverse_from_entities(new_tenant(), [uuid4()], max_depth=depth)


async def test_traversal_rejects_naive_as_of(store: MemoryStore) -> None:
    with pytest.raises(InvalidDataError):
        await store.traverse_from_entities(new_tenant(), [uuid4()], as_of=datetime(2026, 1, 1))


# --- erasure ------------------------------------------------------------------------------------


async def test_delete_customer_data_erases_episodes_entities_and_their_edges(store: MemoryStore) -> None:
    tenant, agent, customer = new_tenant(), uuid4(), uuid4()
    episodes = [make_episode(tenant, agent, f"c{i}", customer_profile_id=customer) for i in range(2)]
    other_customer_episode = make_episode(tenant, agent, "keep", customer_profile_id=uuid4())
    anonymous_episode = make_episode(tenant, agent, "keep too")
    for episode in (*episodes, other_customer_episode, anonymous_episode):
        await store.add_episode(episode)
    mine = [make_entity(tenant, agent, f"mine {i}", customer_profile_id=customer) for i in range(2)]
    shared, outsider = make_entity(tenant, agent, "shared"), make_entity(tenant, agent, "outsider")
    for entity in (*mine, shared, outsider):
        await store.add_entity(entity)
    inner = make_edge(tenant, mine[0], mine[1])
    outward = make_edge(tenant, shared, mine[1])
    kept_edge = make_edge(tenant, shared, outsider)
    for edge in (inner, outward, kept_edge):
        await store.add_relationship(edge)
    # the same customer id in another tenant is another customer
    foreign_tenant = new_tenant()
    foreign_episode = make_episode(foreign_tenant, agent, "foreign", customer_profile_id=customer)
    foreign_entity = make_entity(foreign_tenant, agent, "foreign", customer_profile_id=customer)
    await store.add_episode(foreign_episode)
    await store.add_entity(foreign_entity)

    assert await store.delete_customer_data(tenant, customer) == 2 + 2 + 2
    for episode in episodes:
        assert await store.get_episode(tenant, episode.id) is None
    for entity in mine:
        assert await store.get_entity(tenant, entity.id) is None
    assert await store.get_episode(tenant, other_customer_episode.id) == other_customer_episode
    assert await store.get_episode(tenant, anonymous_episode.id) == anonymous_episode
    assert ids(await store.get_entities(tenant, agent)) == [outsider.id, shared.id]
    assert await store.traverse_from_entities(tenant, [shared.id], max_depth=5) == [kept_edge]
    assert await store.get_episode(foreign_tenant, foreign_episode.id) == foreign_episode
    assert await store.get_entity(foreign_tenant, foreign_entity.id) == foreign_entity
    assert await store.delete_customer_data(tenant, customer) == 0
