"""MemoryStore contract, values: JSON reads back with its types on every backend; what no backend
can store (NUL, lone surrogates, deep nesting, timestamps without a UTC instant) is an
``InvalidDataError`` before any I/O, in the in-memory reference too; conflicts read alike.
"""

from __future__ import annotations

import math
from typing import Any
from uuid import uuid4

import pytest

from focal.errors import ConflictError, InvalidDataError, NotFoundError
from focal.memory.stores.store import MemoryStore
from tests.contract.memory_backends import (
    add_entities,
    make_edge,
    make_entity,
    make_episode,
    memory_store_fixture,  # noqa: F401 - the parametrised fixture
)
from tests.contract.storable_values import (
    LONE_SURROGATE,
    NUL,
    TYPED_JSON,
    UNSTORABLE_TIMESTAMPS,
    nested,
    typed,
)
from tests.support import new_tenant, unit_vector

DRIVER_WORDS = ("duplicate key", "violates", "DETAIL", "Key (", "Error:")
YEAR_1 = UNSTORABLE_TIMESTAMPS["year-1-with-offset"]
YEAR_9999 = UNSTORABLE_TIMESTAMPS["year-9999-with-offset"]


# --- JSON keeps its types ------------------------------------------------------------------------


async def test_json_fields_keep_their_types(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    episode = make_episode(tenant, agent, "typed numbers", metadata=TYPED_JSON)
    await store.add_episode(episode)
    source, target = make_entity(tenant, agent, "a", attributes=TYPED_JSON), make_entity(tenant, agent, "b")
    await store.add_entity(source)
    await store.add_entity(target)
    await store.add_relationship(make_edge(tenant, source, target, metadata=TYPED_JSON))

    by_id = await store.get_episode(tenant, episode.id)
    [found] = await store.text_search_episodes("typed", tenant, agent)
    assert by_id is not None
    assert typed(by_id.metadata) == typed(found.metadata) == typed(TYPED_JSON)
    entity = await store.get_entity(tenant, source.id)
    listed = await store.get_entities(tenant, agent)
    assert entity is not None and typed(entity.attributes) == typed(TYPED_JSON)
    assert typed(listed[0].attributes) == typed(TYPED_JSON)
    [edge] = await store.traverse_from_entities(tenant, [source.id])
    assert typed(edge.metadata) == typed(TYPED_JSON)


# --- unstorable values: InvalidDataError, nothing written -----------------------------------------

BAD_EPISODE_CHANGES: dict[str, dict[str, Any]] = {
    "nul-content": {"content": f"hello{NUL}world"},  # the in-memory store took it before
    "surrogate-content": {"content": f"hello {LONE_SURROGATE}"},
    "nul-group": {"group_id": f"g{NUL}"},
    "surrogate-model": {"embedding_model": f"m{LONE_SURROGATE}"},
    "surrogate-in-metadata": {"metadata": {"k": LONE_SURROGATE}},
    "surrogate-metadata-key": {"metadata": {LONE_SURROGATE: 1}},
    "nested-2000": {"metadata": {"deep": nested(2000)}},
    "valid-from-year-1": {"valid_from": YEAR_1},
    "recorded-at-year-9999": {"recorded_at": YEAR_9999},
}


@pytest.mark.parametrize("change", BAD_EPISODE_CHANGES.values(), ids=BAD_EPISODE_CHANGES.keys())
async def test_unstorable_episode_is_refused_and_writes_nothing(
    store: MemoryStore, change: dict[str, Any]
) -> None:
    tenant, agent = new_tenant(), uuid4()
    # model_copy(update=...) skips validation, as model_construct does: the store must re-check.
    bad = make_episode(tenant, agent, embedding=unit_vector(0)).model_copy(update=change)
    good = make_episode(tenant, agent)
    with pytest.raises(InvalidDataError):
        await store.add_episode(bad)
    with pytest.raises(InvalidDataError):
        await store.add_episodes([good, bad])
    for episode in (bad, good):
        assert await store.get_episode(tenant, episode.id) is None
    assert await store.text_search_episodes("hello", tenant, agent) == []


BAD_ENTITY_CHANGES: dict[str, dict[str, Any]] = {
    "nul-name": {"name": f"Ann{NUL}"},
    "surrogate-type": {"entity_type": f"PERSON{LONE_SURROGATE}"},
    "nul-canonical-name": {"canonical_name": f"ann{NUL}"},
    "surrogate-in-attributes": {"attributes": {"k": [LONE_SURROGATE]}},
    "nan-in-attributes": {"attributes": {"k": math.nan}},
    "nested-2000": {"attributes": {"deep": nested(2000)}},
    "created-at-year-1": {"created_at": YEAR_1},
    "updated-at-year-9999": {"updated_at": YEAR_9999},
}


@pytest.mark.parametrize("change", BAD_ENTITY_CHANGES.values(), ids=BAD_ENTITY_CHANGES.keys())
async def test_unstorable_entity_is_refused_and_writes_nothing(
    store: MemoryStore, change: dict[str, Any]
) -> None:
    tenant, agent = new_tenant(), uuid4()
    bad = make_entity(tenant, agent, "Ann").model_copy(update=change)
    with pytest.raises(InvalidDataError):
        await store.add_entity(bad)
    assert await store.get_entity(tenant, bad.id) is None
    assert await store.get_entities(tenant, agent) == []


BAD_EDGE_CHANGES: dict[str, dict[str, Any]] = {
    "nul-type": {"relationship_type": f"KNOWS{NUL}"},
    "surrogate-type": {"relationship_type": f"KNOWS{LONE_SURROGATE}"},
    "surrogate-in-metadata": {"metadata": {"k": LONE_SURROGATE}},
    "nested-2000": {"metadata": {"deep": nested(2000)}},
    "valid-from-year-1": {"valid_from": YEAR_1},
    "valid-to-year-9999": {"valid_to": YEAR_9999},
}


@pytest.mark.parametrize("change", BAD_EDGE_CHANGES.values(), ids=BAD_EDGE_CHANGES.keys())
async def test_unstorable_relationship_is_refused_and_writes_nothing(
    store: MemoryStore, change: dict[str, Any]
) -> None:
    tenant, agent = new_tenant(), uuid4()
    source, target = await add_entities(store, tenant, agent, "a", "b")
    bad = make_edge(tenant, source, target).model_copy(update=change)
    with pytest.raises(InvalidDataError):
        await store.add_relationship(bad)
    assert await store.traverse_from_entities(tenant, [source.id]) == []


@pytest.mark.parametrize("bad", [LONE_SURROGATE, f"a{NUL}b"], ids=["lone-surrogate", "nul"])
async def test_searches_and_deletes_refuse_unstorable_text(store: MemoryStore, bad: str) -> None:
    tenant, agent = new_tenant(), uuid4()
    episode = make_episode(tenant, agent, group_id="g1")
    await store.add_episode(episode)
    [entity] = await add_entities(store, tenant, agent, "a")
    calls = [
        store.text_search_episodes(f"hello {bad}", tenant, agent),
        store.vector_search_episodes(unit_vector(0), tenant, agent, embedding_model=bad),
        store.get_entities(tenant, agent, entity_type=bad),
        store.delete_by_group(tenant, bad),
        store.traverse_from_entities(tenant, [entity.id], relationship_types=["KNOWS", bad]),
    ]
    for call in calls:
        with pytest.raises(InvalidDataError):
            await call
    assert await store.get_episode(tenant, episode.id) == episode


@pytest.mark.parametrize("moment", UNSTORABLE_TIMESTAMPS.values(), ids=UNSTORABLE_TIMESTAMPS.keys())
async def test_as_of_without_a_utc_instant_is_refused(store: MemoryStore, moment: Any) -> None:
    tenant, agent = new_tenant(), uuid4()
    with pytest.raises(InvalidDataError):
        await store.vector_search_episodes(unit_vector(0), tenant, agent, as_of=moment)
    with pytest.raises(InvalidDataError):
        await store.traverse_from_entities(tenant, [uuid4()], as_of=moment)


# --- conflicts read like the in-memory reference (no driver text) ---------------------------------


async def test_conflict_messages_are_the_reference_ones(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    episode = make_episode(tenant, agent)
    await store.add_episode(episode)
    source, target = await add_entities(store, tenant, agent, "a", "b")
    edge = make_edge(tenant, source, target)
    await store.add_relationship(edge)
    missing = make_entity(tenant, agent, "never saved")
    cases: list[tuple[Any, type[Exception], str]] = [
        (store.add_episode(episode), ConflictError, f"episode {episode.id} already exists"),
        (store.add_entity(source), ConflictError, f"entity {source.id} already exists"),
        (store.add_relationship(edge), ConflictError, f"relationship {edge.id} already exists"),
        (
            store.add_relationship(make_edge(tenant, source, missing)),
            NotFoundError,
            f"entity {missing.id} does not exist in tenant {tenant}",
        ),
        (
            store.add_relationship(make_edge(tenant, missing, target)),
            NotFoundError,
            f"entity {missing.id} does not exist in tenant {tenant}",
        ),
    ]
    for call, error, message in cases:
        with pytest.raises(error) as caught:
            await call
        assert str(caught.value) == message
        assert not any(word in str(caught.value) for word in DRIVER_WORDS)
    assert await store.traverse_from_entities(tenant, [source.id, target.id]) == [edge]
