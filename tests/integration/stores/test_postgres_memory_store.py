"""PostgreSQL-only behaviour of the MemoryStore: schema, plan choice, filtered recall, errors.

The shared behaviour is in ``tests/contract/test_memory_store.py``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import numpy as np
import pytest
import pytest_asyncio

from focal.db.migrate import downgrade, upgrade
from focal.db.pool import create_pool
from focal.errors import InvalidDataError, NotFoundError, StoreConnectionError
from focal.memory.models import Entity, Episode, Relationship
from focal.memory.stores import postgres_sql as sql
from focal.memory.stores.postgres import PostgresMemoryStore
from focal.models import utc_now
from tests.support import TEST_EMBEDDING_DIMENSIONS, new_tenant, normalized

pytestmark = pytest.mark.postgres

RECALL_DIMENSIONS = 32
RECALL_TENANTS = 10
RECALL_ROWS = 3000
RECALL_QUERIES = 20


def clustered_vectors(rng: np.random.Generator, centers: np.ndarray, count: int, spread: float) -> np.ndarray:
    """Points around randomly chosen cluster centers (real embeddings cluster by topic)."""
    chosen = centers[rng.integers(0, len(centers), count)]
    noise = rng.standard_normal((count, centers.shape[1])) * spread / np.sqrt(centers.shape[1])
    return (chosen + noise).astype(np.float32)


async def exact_top_ids(
    pool: asyncpg.Pool, tenant_id: UUID, agent_id: UUID, query: list[float], k: int
) -> list[UUID]:
    """Ground truth: a sequential exact scan in raw SQL (no index scan can serve the ORDER BY)."""
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SET LOCAL enable_indexscan = off")
        rows = await connection.fetch(
            "SELECT id FROM episodes WHERE tenant_id = $1 AND agent_id = $2 "
            "ORDER BY embedding <=> $3::vector, id LIMIT $4",
            tenant_id,
            agent_id,
            query,
            k,
        )
    return [row["id"] for row in rows]


async def hnsw_plan(pool: asyncpg.Pool, dimensions: int, tenant_id: UUID, agent_id: UUID, query: Any) -> str:
    """The plan of the store's index path, with the knobs the store sets."""
    async with pool.acquire() as connection:
        await connection.execute(sql.begin_hnsw_search_sql(100))
        rows = await connection.fetch(
            "EXPLAIN " + sql.vector_search_hnsw_sql(dimensions),
            tenant_id,
            agent_id,
            None,
            None,
            None,
            query,
            0.0,
            10,
            40,
        )
        await connection.execute("ROLLBACK")
    return "\n".join(row[0] for row in rows)


def assert_one_partition_hnsw_scan(plan: str) -> None:
    """The index path reads one partition (the tenant's), through its HNSW index."""
    scans = re.findall(r"Index Scan using (episodes_p\d+_embedding_idx)", plan)
    assert len(scans) == 1, plan
    assert "Seq Scan" not in plan and "Bitmap" not in plan, plan


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def recall_pool(database_factory: Callable[..., Awaitable[str]]) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(await database_factory(dimensions=RECALL_DIMENSIONS), min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


async def test_filtered_search_keeps_recall_with_ten_tenants_sharing_the_index(
    recall_pool: asyncpg.Pool,
) -> None:
    rng = np.random.default_rng(7)
    centers = rng.standard_normal((40, RECALL_DIMENSIONS))
    tenants = [new_tenant() for _ in range(RECALL_TENANTS)]
    agent = uuid4()
    vectors = clustered_vectors(rng, centers, RECALL_ROWS, spread=0.6)
    episodes = [
        Episode(
            tenant_id=tenants[i % RECALL_TENANTS],
            agent_id=agent,
            content=f"e{i}",
            embedding=v.tolist(),
            embedding_model="test-model",
        )
        for i, v in enumerate(vectors)
    ]
    # the index path is forced: every scope is "too large" for the exact plan
    store = PostgresMemoryStore(recall_pool, embedding_dimensions=RECALL_DIMENSIONS, exact_scan_max_rows=0)
    await store.add_episodes(episodes)
    await recall_pool.execute("ANALYZE episodes")
    queries = clustered_vectors(rng, centers, RECALL_QUERIES, spread=0.6)

    plan = await hnsw_plan(recall_pool, RECALL_DIMENSIONS, tenants[0], agent, queries[0].tolist())
    assert_one_partition_hnsw_scan(plan)

    recalls = []
    for number, query in enumerate(queries):
        tenant = tenants[number % RECALL_TENANTS]
        truth = await exact_top_ids(recall_pool, tenant, agent, query.tolist(), 10)
        hits = await store.vector_search_episodes(query.tolist(), tenant, agent, min_score=-1.0)
        assert len(hits) == 10
        assert all(episode.tenant_id == tenant for episode, _ in hits)
        scores = [score for _, score in hits]
        assert scores == sorted(scores, reverse=True)
        recalls.append(len({e.id for e, _ in hits} & set(truth)) / 10)
    assert sum(recalls) / len(recalls) >= 0.95

    # the default store takes the exact plan for 300-row scopes: recall is exactly 1
    exact_store = PostgresMemoryStore(recall_pool, embedding_dimensions=RECALL_DIMENSIONS)
    tenant = tenants[1]
    truth = await exact_top_ids(recall_pool, tenant, agent, queries[1].tolist(), 10)
    hits = await exact_store.vector_search_episodes(queries[1].tolist(), tenant, agent, min_score=-1.0)
    assert [e.id for e, _ in hits] == truth


async def test_index_path_applies_every_filter_like_the_exact_path(pg_pool: asyncpg.Pool) -> None:
    tenant, agent, customer = new_tenant(), uuid4(), uuid4()
    now = utc_now()
    rng = np.random.default_rng(3)
    old_window = (now - timedelta(days=400), now - timedelta(days=300))  # every fifth episode
    episodes = [
        Episode(
            tenant_id=tenant,
            agent_id=agent,
            content=f"e{i}",
            customer_profile_id=customer if i % 3 == 0 else None,
            embedding=normalized(rng.standard_normal(TEST_EMBEDDING_DIMENSIONS).tolist()),
            embedding_model="m1" if i % 2 else "m2",
            valid_from=old_window[0] if i % 5 == 0 else now - timedelta(days=200),
            valid_to=old_window[1] if i % 5 == 0 else None,
        )
        for i in range(60)
    ]
    exact = PostgresMemoryStore(pg_pool, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    indexed = PostgresMemoryStore(
        pg_pool, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS, exact_scan_max_rows=0
    )
    await exact.add_episodes(episodes)
    query = normalized([1.0, -0.5, 0.25, 0.0, 2.0])
    cases: list[dict[str, Any]] = [
        {},
        {"customer_profile_id": customer},
        {"embedding_model": "m1"},
        {"min_score": 0.3},
        {"limit": 3},
        {"as_of": now - timedelta(days=350)},
    ]
    for kwargs in cases:
        expected = await exact.vector_search_episodes(query, tenant, agent, **kwargs)
        got = await indexed.vector_search_episodes(query, tenant, agent, **kwargs)
        assert [(e.id, round(s, 6)) for e, s in got] == [(e.id, round(s, 6)) for e, s in expected], kwargs
        assert expected, kwargs


async def test_schema_has_hnsw_gin_plain_storage_and_tenant_indexes(pg_pool: asyncpg.Pool) -> None:
    indexes = {
        row["indexname"]: row["indexdef"]
        for row in await pg_pool.fetch(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE tablename IN ('episodes', 'entities', 'relationships')"
        )
    }
    assert "USING hnsw (embedding vector_cosine_ops)" in indexes["episodes_embedding_hnsw_idx"]
    assert "USING gin (search_vector)" in indexes["episodes_search_vector_gin_idx"]
    # every partition stores vectors PLAIN and has its own HNSW index
    partitions = await pg_pool.fetch(
        "SELECT c.relname, a.attstorage, "
        "       EXISTS (SELECT 1 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
        "               JOIN pg_am am ON am.oid = ic.relam WHERE i.indrelid = c.oid AND am.amname = 'hnsw') "
        "FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'embedding' "
        "WHERE h.inhparent = 'episodes'::regclass"
    )
    assert len(partitions) == 16
    assert all(row[1] == b"p" and row[2] for row in partitions), partitions
    for table in ("episodes", "entities", "relationships"):
        assert any(
            re.search(rf"ON (ONLY )?public\.{table} USING btree \(tenant_id", definition)
            for definition in indexes.values()
        ), table


async def test_halfvec_expression_index_above_2000_dimensions(
    database_factory: Callable[..., Awaitable[str]],
) -> None:
    dimensions = 2048
    pool = await create_pool(await database_factory(dimensions=dimensions), min_size=1, max_size=2)
    try:
        definition = await pool.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'episodes_embedding_hnsw_idx'"
        )
        assert f"halfvec({dimensions})" in definition and "halfvec_cosine_ops" in definition
        rng = np.random.default_rng(5)
        tenant, agent = new_tenant(), uuid4()
        episodes = [
            Episode(
                tenant_id=tenant,
                agent_id=agent,
                content=f"e{i}",
                embedding=rng.standard_normal(dimensions).tolist(),
                embedding_model="test-model",
            )
            for i in range(30)
        ]
        exact = PostgresMemoryStore(pool, embedding_dimensions=dimensions)
        indexed = PostgresMemoryStore(pool, embedding_dimensions=dimensions, exact_scan_max_rows=0)
        await exact.add_episodes(episodes)
        query = rng.standard_normal(dimensions).tolist()
        assert_one_partition_hnsw_scan(await hnsw_plan(pool, dimensions, tenant, agent, query))
        expected = await exact.vector_search_episodes(query, tenant, agent, min_score=-1.0, limit=5)
        got = await indexed.vector_search_episodes(query, tenant, agent, min_score=-1.0, limit=5)
        assert [e.id for e, _ in got] == [e.id for e, _ in expected]
        assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-6)
    finally:
        await pool.close()


async def test_relationships_cascade_with_their_entities_and_stay_in_their_tenant(
    pg_pool: asyncpg.Pool,
) -> None:
    store = PostgresMemoryStore(pg_pool, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    tenant, agent = new_tenant(), uuid4()
    a = Entity(tenant_id=tenant, agent_id=agent, name="a", entity_type="T")
    b = Entity(tenant_id=tenant, agent_id=agent, name="b", entity_type="T")
    for entity in (a, b):
        await store.add_entity(entity)
    edge = Relationship(tenant_id=tenant, source_entity_id=a.id, target_entity_id=b.id, relationship_type="R")
    await store.add_relationship(edge)
    # the composite foreign key refuses an edge whose tenant differs from its entities', even in raw SQL
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await pg_pool.execute(
            "INSERT INTO relationships (id, tenant_id, source_entity_id, target_entity_id, "
            "relationship_type, confidence, valid_from) VALUES ($1, $2, $3, $4, 'R', 1, now())",
            uuid4(),
            new_tenant(),
            a.id,
            b.id,
        )
    await pg_pool.execute("DELETE FROM entities WHERE id = $1", b.id)
    assert await pg_pool.fetchval("SELECT count(*) FROM relationships WHERE id = $1", edge.id) == 0
    with pytest.raises(NotFoundError):
        await store.add_relationship(edge)


async def test_wrong_length_vectors_are_invalid_data(pg_pool: asyncpg.Pool) -> None:
    store = PostgresMemoryStore(pg_pool, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    tenant, agent = new_tenant(), uuid4()
    with pytest.raises(InvalidDataError):
        await store.vector_search_episodes([1.0] * (TEST_EMBEDDING_DIMENSIONS + 3), tenant, agent)
    # a store configured for another dimension than the column: PostgreSQL refuses, translated
    stored = Episode(
        tenant_id=tenant,
        agent_id=agent,
        content="x",
        embedding=[1.0] * TEST_EMBEDDING_DIMENSIONS,
        embedding_model="m",
    )
    await store.add_episode(stored)
    misconfigured = PostgresMemoryStore(pg_pool, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS + 1)
    too_long = [1.0] * (TEST_EMBEDDING_DIMENSIONS + 1)
    episode = Episode(tenant_id=tenant, agent_id=agent, content="y", embedding=too_long, embedding_model="m")
    with pytest.raises(InvalidDataError):
        await misconfigured.add_episode(episode)
    with pytest.raises(InvalidDataError):
        await misconfigured.vector_search_episodes(too_long, tenant, agent)
    assert await store.get_episode(tenant, episode.id) is None
    assert [
        e.id for e, _ in await store.vector_search_episodes([1.0] * TEST_EMBEDDING_DIMENSIONS, tenant, agent)
    ] == [stored.id]


async def test_text_search_stems_words(pg_pool: asyncpg.Pool) -> None:
    store = PostgresMemoryStore(pg_pool, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    tenant, agent = new_tenant(), uuid4()
    episode = Episode(tenant_id=tenant, agent_id=agent, content="The customer was refunded twice")
    await store.add_episode(episode)
    assert [e.id for e in await store.text_search_episodes("refunds", tenant, agent)] == [episode.id]
    assert await store.text_search_episodes("the was", tenant, agent) == []  # stop words only


async def test_closed_pool_is_a_connection_error(pg_dsn: str) -> None:
    pool = await create_pool(pg_dsn, min_size=1, max_size=1)
    store = PostgresMemoryStore(pool, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    await pool.close()
    with pytest.raises(StoreConnectionError):
        await store.get_episode(new_tenant(), uuid4())


async def test_downgrade_drops_every_memory_object_and_upgrade_restores_them(
    database_factory: Callable[..., Awaitable[str]],
) -> None:
    dsn = await database_factory(dimensions=TEST_EMBEDDING_DIMENSIONS)
    names = ["episodes", "episodes_p00", "episodes_p15", "episode_ids", "entities", "relationships"]

    async def existing() -> list[str]:
        connection = await asyncpg.connect(dsn)
        try:
            return [name for name in names if await connection.fetchval("SELECT to_regclass($1)", name)]
        finally:
            await connection.close()

    assert await existing() == names
    await downgrade(dsn, "0004")
    assert await existing() == []
    await upgrade(dsn, "head", embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    assert await existing() == names


async def test_index_plan_settings_do_not_leak_to_the_pooled_connection(pg_dsn: str) -> None:
    pool = await create_pool(pg_dsn, min_size=1, max_size=1)
    try:
        store = PostgresMemoryStore(
            pool, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS, exact_scan_max_rows=0
        )
        tenant, agent = new_tenant(), uuid4()
        await store.add_episode(
            Episode(tenant_id=tenant, agent_id=agent, content="x", embedding=[1.0] * 8, embedding_model="m")
        )
        assert len(await store.vector_search_episodes([1.0] * 8, tenant, agent)) == 1
        with pytest.raises(InvalidDataError):  # fails inside the index plan's transaction
            await PostgresMemoryStore(
                pool, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS + 1, exact_scan_max_rows=0
            ).vector_search_episodes([1.0] * 9, tenant, agent)
        async with pool.acquire() as connection:
            assert not connection.is_in_transaction()
            assert await connection.fetchval("SHOW enable_sort") == "on"
            assert await connection.fetchval("SELECT current_setting('hnsw.iterative_scan', true)") in (
                None,
                "off",
            )
    finally:
        await pool.close()
