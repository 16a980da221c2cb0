"""Session-scoped real servers for the whole suite (nothing else belongs in this file).

Servers start lazily, the first time a test asks for them, and stop at the end of the session:

- ``postgres_admin_dsn`` -> ``str``: DSN of the ``postgres`` database of a PostgreSQL 18 + pgvector
  server (embedded, in a temp dir, fsync off), or ``$FOCAL_TEST_DATABASE_URL`` when set (a role that
  may ``CREATE DATABASE``). If the server cannot start, every test using it errors: never a skip.
- ``database_factory`` -> ``async (*, dimensions=8, migrate=True) -> str``: a fresh, uniquely named
  database (migrated to head with ``vector(dimensions)`` columns when ``migrate``), its DSN returned.
- ``pg_dsn`` -> ``str``: one shared database at head with ``TEST_EMBEDDING_DIMENSIONS`` (8).
- ``pg_pool`` -> ``asyncpg.Pool``: ``focal.db.pool.create_pool(pg_dsn)``, closed at the end.
- ``postgres_data_dir`` -> ``Path`` (function scope): a place for a test's own ``EmbeddedPostgres``
  (e.g. to stop and restart it); use it rather than ``tmp_path`` (see ``_postgres_scratch_dir``).
- ``redis_url`` -> ``str``: an embedded Redis-protocol server (no persistence), or
  ``$FOCAL_TEST_REDIS_URL``.
- ``redis_client`` -> ``redis.asyncio.Redis``: one client of that server for the session, on a
  ``BlockingConnectionPool`` of 64 (as production builds it: bursts wait for a connection).

Tests share these servers and isolate by working in their own tenant (``tests.support.new_tenant``)
or their own database (``database_factory``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import uuid4

import asyncpg
import pytest
import pytest_asyncio
from redis.asyncio import BlockingConnectionPool, Redis

from focal.db.embedded import EmbeddedPostgres, EmbeddedRedis, create_database, drop_database
from focal.db.migrate import upgrade
from focal.db.pool import create_pool
from tests.support import TEST_EMBEDDING_DIMENSIONS, DatabaseFactory
from tests.tool_server import ToolServer
from tests.unit.turn.tool_support import API_KEY


@contextmanager
def _postgres_scratch_dir() -> Iterator[Path]:
    """A fresh directory for a PostgreSQL cluster, outside pytest's ``tmp_path`` tree.

    PostgreSQL runs as an unprivileged user (it refuses root) and needs to traverse the path to
    its data directory; pytest resets ``/tmp/pytest-of-<user>`` to mode 0700 at the start of every
    session, which would lock the server out whenever another pytest run starts meanwhile.
    """
    path = Path(tempfile.mkdtemp(prefix="focal-test-pg-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def postgres_data_dir() -> Iterator[Path]:
    """A not-yet-existing data directory for a test's own ``EmbeddedPostgres`` (removed after)."""
    with _postgres_scratch_dir() as path:
        yield path / "data"


@pytest.fixture(scope="session")
def postgres_admin_dsn() -> Iterator[str]:
    external = os.environ.get("FOCAL_TEST_DATABASE_URL")
    if external:
        yield external
        return
    with _postgres_scratch_dir() as path:
        server = EmbeddedPostgres(path / "data", database="postgres", fsync=False, max_connections=300)
        server.start()
        try:
            yield server.admin_dsn
        finally:
            server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def database_factory(postgres_admin_dsn: str) -> AsyncIterator[DatabaseFactory]:
    """Fresh databases. Migrated ones are cloned from a per-dimension template migrated once,
    so each costs one ``CREATE DATABASE ... TEMPLATE`` instead of a full Alembic run."""
    templates: dict[int, str] = {}
    created: list[str] = []
    template_lock = asyncio.Lock()

    async def migrated_template(dimensions: int) -> str:
        async with template_lock:
            if dimensions not in templates:
                name = f"focal_template_{dimensions}_{uuid4().hex[:8]}"
                dsn = await create_database(postgres_admin_dsn, name)
                created.append(name)
                await upgrade(dsn, "head", embedding_dimensions=dimensions)
                templates[dimensions] = name
            return templates[dimensions]

    async def factory(*, dimensions: int = TEST_EMBEDDING_DIMENSIONS, migrate: bool = True) -> str:
        template = await migrated_template(dimensions) if migrate else None
        name = f"focal_test_{uuid4().hex[:12]}"
        dsn = await create_database(postgres_admin_dsn, name, template=template)
        created.append(name)
        return dsn

    yield factory
    if os.environ.get("FOCAL_TEST_DATABASE_URL"):  # an embedded server's temp dir goes away anyway
        for name in reversed(created):
            await drop_database(postgres_admin_dsn, name)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pg_dsn(database_factory: DatabaseFactory) -> str:
    return await database_factory(dimensions=TEST_EMBEDDING_DIMENSIONS, migrate=True)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pg_pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(pg_dsn, min_size=1, max_size=10)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("FOCAL_TEST_REDIS_URL")
    if external:
        yield external
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persistence=False)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    pool = BlockingConnectionPool.from_url(redis_url, max_connections=64, timeout=10)
    client = Redis(connection_pool=pool)
    try:
        yield client
    finally:
        await client.aclose()
        await pool.aclose()


@pytest.fixture(scope="session")
def tool_server() -> Iterator[ToolServer]:
    """A real loopback tool server (``tests.tool_server``), expecting the tool secret ``API_KEY``."""
    server = ToolServer(api_key=API_KEY).start()
    yield server
    server.stop()


@pytest.fixture
def shop(tool_server: ToolServer) -> ToolServer:
    """The loopback tool server with its requests and labels cleared."""
    tool_server.requests.clear()
    tool_server.labels.clear()
    return tool_server
