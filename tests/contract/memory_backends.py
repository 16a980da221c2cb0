"""The MemoryStore contract's backends and builders, shared by its test modules.

A new backend joins by adding a param to ``BACKENDS`` and a branch to the fixture; no test is
copied. Every test works in its own random tenant(s).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from focal.memory.models import Entity, Episode, Relationship
from focal.memory.stores.inmemory import InMemoryMemoryStore
from focal.memory.stores.store import MemoryStore
from tests.support import TEST_EMBEDDING_DIMENSIONS

DIMS = TEST_EMBEDDING_DIMENSIONS
# "postgres-index-plan" is the PostgreSQL store forced onto its HNSW plan (the one large search
# scopes take): vector search must return the same rows, in the same order, whichever plan runs.
BACKENDS = [
    "inmemory",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("postgres-index-plan", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS, name="store")
def memory_store_fixture(request: pytest.FixtureRequest) -> MemoryStore:
    """A MemoryStore of every backend, with ``TEST_EMBEDDING_DIMENSIONS``-long embeddings.

    Synchronous on purpose: ``getfixturevalue`` of the async session fixture ``pg_pool`` only
    works from a sync fixture. Stores need no teardown: each test works in its own tenants.
    """
    if request.param == "inmemory":
        return InMemoryMemoryStore(embedding_dimensions=DIMS)
    if request.param in ("postgres", "postgres-index-plan"):
        from focal.memory.stores.postgres import PostgresMemoryStore

        plan: dict[str, Any] = {"exact_scan_max_rows": 0} if request.param == "postgres-index-plan" else {}
        return PostgresMemoryStore(request.getfixturevalue("pg_pool"), embedding_dimensions=DIMS, **plan)
    raise AssertionError(f"unknown backend {request.param}")


def make_episode(tenant_id: UUID, agent_id: UUID, content: str = "hello world", **fields: Any) -> Episode:
    if fields.get("embedding") is not None:
        fields.setdefault("embedding_model", "test-model")
    return Episode(tenant_id=tenant_id, agent_id=agent_id, content=content, **fields)


def make_entity(tenant_id: UUID, agent_id: UUID, name: str, **fields: Any) -> Entity:
    fields.setdefault("entity_type", "PERSON")
    return Entity(tenant_id=tenant_id, agent_id=agent_id, name=name, **fields)


def make_edge(
    tenant_id: UUID, source: Entity, target: Entity, kind: str = "KNOWS", **fields: Any
) -> Relationship:
    return Relationship(
        tenant_id=tenant_id,
        source_entity_id=source.id,
        target_entity_id=target.id,
        relationship_type=kind,
        **fields,
    )


def ids(items: list[Any]) -> list[UUID]:
    return [item.id for item in items]


def hit_ids(hits: list[tuple[Episode, float]]) -> list[UUID]:
    return [episode.id for episode, _ in hits]


async def add_entities(store: MemoryStore, tenant: UUID, agent: UUID, *names: str) -> list[Entity]:
    entities = [make_entity(tenant, agent, name) for name in names]
    for entity in entities:
        await store.add_entity(entity)
    return entities
