"""The asyncpg pool and the driver-error translation, against real PostgreSQL servers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import pytest

from focal.db.embedded import EmbeddedPostgres, free_port
from focal.db.migrate import downgrade, upgrade
from focal.db.pool import check_pool, create_pool, create_pool_from_settings
from focal.db.translate import translate_pg_errors
from focal.errors import (
    ConflictError,
    InvalidDataError,
    NotFoundError,
    SchemaVersionError,
    StoreConnectionError,
    StoreError,
)
from focal.memory.models import Episode
from focal.memory.stores.postgres import PostgresMemoryStore
from focal.settings import DatabaseSettings
from tests.support import TEST_EMBEDDING_DIMENSIONS, DatabaseFactory, new_tenant, unit_vector

pytestmark = pytest.mark.postgres


async def test_statement_cache_disabled_leaves_no_prepared_statements(pg_dsn: str) -> None:
    """``statement_cache_size=0`` (PgBouncer transaction mode) works and really prepares nothing."""
    pool = await create_pool(pg_dsn, min_size=1, max_size=1, statement_cache_size=0)
    cached = await create_pool(pg_dsn, min_size=1, max_size=1)
    try:
        query = f"SELECT $1::vector({TEST_EMBEDDING_DIMENSIONS}) AS v"
        for _ in range(3):
            assert await pool.fetchval(query, unit_vector(1)) == unit_vector(1)
            assert await cached.fetchval(query, unit_vector(1)) == unit_vector(1)
        async with pool.acquire() as connection:
            assert await connection.fetchval("SELECT count(*) FROM pg_prepared_statements") == 0
        async with cached.acquire() as connection:
            assert await connection.fetchval("SELECT count(*) FROM pg_prepared_statements") > 0
    finally:
        await pool.close()
        await cached.close()


async def test_a_connection_released_inside_a_transaction_comes_back_without_it(pg_dsn: str) -> None:
    """The pool sends no reset query on release (``VectorConnection.get_reset_query``): what it
    relies on is that an open transaction, and the ``SET LOCAL`` state in it, still ends there,
    as when a search that began one by hand (the memory store's HNSW plan) is cancelled."""
    pool = await create_pool(pg_dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as connection:
            default = await connection.fetchval("SHOW statement_timeout")
            await connection.execute("BEGIN READ ONLY; SET LOCAL statement_timeout = '1234ms'")
            assert await connection.fetchval("SHOW statement_timeout") == "1234ms"
        async with pool.acquire() as connection:  # the same connection: max_size=1
            assert not connection.is_in_transaction()
            assert await connection.fetchval("SHOW statement_timeout") == default
            await connection.execute("CREATE TEMP TABLE written_after (x int)")  # not read-only
    finally:
        await pool.close()


async def test_refused_connection_names_the_host_but_never_the_password() -> None:
    port = free_port()
    with pytest.raises(StoreConnectionError) as caught:
        await create_pool(f"postgresql://focal:s3cret-pw@127.0.0.1:{port}/focal", connect_timeout=2)
    assert f"127.0.0.1:{port}/focal" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)


async def test_pool_from_settings_uses_the_url_and_options(pg_dsn: str) -> None:
    settings = DatabaseSettings(url=pg_dsn, pool_min_size=1, pool_max_size=3, statement_cache_size=0)
    pool = await create_pool_from_settings(settings)
    try:
        await check_pool(pool)
        assert pool.get_max_size() == 3
    finally:
        await pool.close()


async def test_database_without_pgvector_is_a_schema_error(database_factory: DatabaseFactory) -> None:
    dsn = await database_factory(migrate=False)
    with pytest.raises(SchemaVersionError, match="focal db upgrade"):
        await create_pool(dsn, min_size=1)
    pool = await create_pool(dsn, min_size=1, vector_codecs=False)  # maintenance use still works
    try:
        await check_pool(pool)
    finally:
        await pool.close()


async def test_pool_serves_again_after_the_server_restarts(postgres_data_dir: Path) -> None:
    server = EmbeddedPostgres(postgres_data_dir, fsync=False)
    await server.start_async()
    pool = await create_pool(server.dsn, min_size=2, max_size=2, vector_codecs=False, connect_timeout=2)
    try:
        await check_pool(pool)
        await server.stop_async()
        with pytest.raises(StoreConnectionError):
            await check_pool(pool, timeout_seconds=2)
        with pytest.raises(StoreConnectionError), translate_pg_errors("while_down", tenant_id=new_tenant()):
            await pool.fetchval("SELECT 1")
        await server.start_async()
        # Connections broken by the restart are replaced on acquire; allow a bounded settling time.
        deadline = time.monotonic() + 10
        while True:
            try:
                await check_pool(pool, timeout_seconds=2)
                break
            except StoreConnectionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        assert await pool.fetchval("SELECT 41 + 1") == 42
    finally:
        await pool.close()
        await server.stop_async()


async def test_translate_maps_constraint_errors(pg_pool: asyncpg.Pool) -> None:
    async with pg_pool.acquire() as connection:
        await connection.execute(
            f"""
            CREATE TEMP TABLE parents (id int PRIMARY KEY);
            CREATE TEMP TABLE children (
                id int PRIMARY KEY,
                parent_id int REFERENCES parents (id),
                amount int NOT NULL CHECK (amount >= 0),
                code varchar(3),
                embedding vector({TEST_EMBEDDING_DIMENSIONS})
            );
            INSERT INTO parents VALUES (1);
            INSERT INTO children VALUES (1, 1, 5, 'abc', NULL);
            """
        )
        insert = "INSERT INTO children VALUES ($1, $2, $3, $4, $5)"
        cases: list[tuple[type[StoreError], tuple[object, ...]]] = [
            (ConflictError, (1, 1, 5, "abc", None)),  # duplicate primary key
            (NotFoundError, (2, 99, 5, "abc", None)),  # unknown parent
            (InvalidDataError, (3, 1, -1, "abc", None)),  # CHECK
            (InvalidDataError, (4, 1, None, "abc", None)),  # NOT NULL
            (InvalidDataError, (5, 1, 5, "abcd", None)),  # string too long
            (InvalidDataError, (6, 1, 5, "abc", [1.0, 2.0])),  # wrong vector dimension
            (InvalidDataError, (7, 1, "five", "abc", None)),  # client-side encoding error
        ]
        for expected, arguments in cases:
            with pytest.raises(expected) as caught:
                async with translate_pg_errors("insert_child", tenant_id=new_tenant()):
                    await connection.execute(insert, *arguments)
            assert type(caught.value) is expected, arguments
            assert caught.value.__cause__ is not None
            assert "insert_child" in str(caught.value)
        assert await connection.fetchval("SELECT count(*) FROM children") == 1  # nothing changed

        with pytest.raises(SchemaVersionError, match="focal db upgrade"), translate_pg_errors("read"):
            await connection.fetch("SELECT * FROM no_such_table")


async def test_exhausted_pool_times_out_as_a_connection_error(pg_dsn: str) -> None:
    pool = await create_pool(pg_dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire():
            with pytest.raises(StoreConnectionError), translate_pg_errors("acquire", tenant_id=new_tenant()):
                async with pool.acquire(timeout=0.05):
                    pass
    finally:
        await pool.close()


async def test_translate_maps_refused_connections_and_passes_focal_errors_through() -> None:
    with pytest.raises(StoreConnectionError) as caught, translate_pg_errors("connect"):
        await asyncpg.connect(f"postgresql://focal@127.0.0.1:{free_port()}/focal", timeout=2)
    assert isinstance(caught.value.__cause__, OSError)

    original = ConflictError("stale version")
    with pytest.raises(ConflictError) as passed:
        async with translate_pg_errors("save"):
            raise original
    assert passed.value is original

    with pytest.raises(KeyError), translate_pg_errors("lookup"):  # not a driver error: left alone
        raise KeyError("x")


async def _warm_every_connection(pool: asyncpg.Pool, store: PostgresMemoryStore, episode: Episode) -> None:
    """Use the vector statements on every connection of the pool, so each caches them."""
    async with pool.acquire() as first, pool.acquire() as second:
        for connection in (first, second):
            assert await connection.fetchval("SELECT $1::vector", unit_vector(0)) == unit_vector(0)
    for _ in range(2):
        assert [
            e.id
            for e, _ in await store.vector_search_episodes(
                unit_vector(0), episode.tenant_id, episode.agent_id
            )
        ]


async def _recreate_the_vector_type(dsn: str) -> None:
    """What ``focal db downgrade base && focal db upgrade`` does while the application runs."""
    await downgrade(dsn, "base")
    await upgrade(dsn, "head", embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)


def _episode(tenant_id: UUID, agent_id: UUID, index: int) -> Episode:
    return Episode(
        tenant_id=tenant_id, agent_id=agent_id, content="x", embedding=unit_vector(index), embedding_model="m"
    )


async def test_pool_registers_the_vector_codec_again_when_the_type_is_recreated(
    database_factory: DatabaseFactory,
) -> None:
    """Before, every vector write failed with "cache lookup failed for type N" (cached
    statements) or as invalid input (no codec for the new OID), and reads returned text."""
    dsn = await database_factory()
    pool = await create_pool(dsn, min_size=2, max_size=2, vector_type_check_seconds=0)
    try:
        store = PostgresMemoryStore(pool, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
        tenant, agent = new_tenant(), uuid4()
        before = _episode(tenant, agent, 0)
        await store.add_episode(before)
        await _warm_every_connection(pool, store, before)
        await _recreate_the_vector_type(dsn)

        after = _episode(tenant, agent, 1)
        await store.add_episode(after)
        assert await store.get_episode(tenant, after.id) == after
        hits = await store.vector_search_episodes(unit_vector(1), tenant, agent)
        assert [(e.id, score) for e, score in hits] == [(after.id, 1.0)]
        async with pool.acquire() as first, pool.acquire() as second:
            for connection in (first, second):
                assert await connection.fetchval("SELECT $1::vector", unit_vector(2)) == unit_vector(2)
    finally:
        await pool.close()


async def test_pool_recovers_from_a_recreated_vector_type_within_its_check_interval(
    database_factory: DatabaseFactory,
) -> None:
    """The default checks the type at most once a second: writes work again within a bounded
    time (polled), never "on every vector write" forever."""
    dsn = await database_factory()
    pool = await create_pool(dsn, min_size=2, max_size=2)
    try:
        store = PostgresMemoryStore(pool, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
        tenant, agent = new_tenant(), uuid4()
        first = _episode(tenant, agent, 0)
        await store.add_episode(first)
        await _warm_every_connection(pool, store, first)
        await _recreate_the_vector_type(dsn)

        deadline = time.monotonic() + 15
        written = []
        while not written:
            episode = _episode(tenant, agent, 1 + len(written))
            try:
                await store.add_episode(episode)
                written.append(episode)
            except StoreError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        for _ in range(4):  # every connection of the pool, not just the one that wrote
            assert await store.get_episode(tenant, written[0].id) == written[0]
            async with pool.acquire() as a, pool.acquire() as b:
                assert [await c.fetchval("SELECT $1::vector", unit_vector(3)) for c in (a, b)] == [
                    unit_vector(3)
                ] * 2
    finally:
        await pool.close()
