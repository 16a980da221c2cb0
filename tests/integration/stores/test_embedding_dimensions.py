"""The schema's embedding dimension against the configured one: refused everywhere it can go wrong.

A process configured with another ``FOCAL_EMBEDDING__DIMENSIONS`` than the ``vector(D)`` columns
would fail every write and search: ``build_services``, ``focal serve`` and ``/ready`` refuse it,
naming both sizes. ``focal db upgrade`` refuses another dimension than the schema's (so a partial
downgrade and an upgrade cannot leave columns of two sizes), and ``focal db current`` reports a
schema whose columns already have mixed sizes.
"""

from __future__ import annotations

import asyncio
from uuid import uuid4

import asyncpg
import pytest
from typer.testing import CliRunner

from focal.api.app import create_app
from focal.bootstrap import build_services, open_services
from focal.cli import app as focal_app
from focal.db.cli import db_app
from focal.db.migrate import (
    check_embedding_dimensions,
    current,
    downgrade,
    embedding_columns,
    head_revision,
    upgrade,
)
from focal.errors import ConfigurationError
from focal.settings import Settings
from tests.api.conftest import JWT_SECRET, asgi_client
from tests.integration.stores.test_migrations import SCHEMA_FINGERPRINT, fetch_column
from tests.support import TEST_EMBEDDING_DIMENSIONS, DatabaseFactory

pytestmark = pytest.mark.postgres

OTHER_DIMENSIONS = 4  # anything but TEST_EMBEDDING_DIMENSIONS (8), the schema's size


def _settings(database_url: str, redis_url: str, dimensions: int) -> Settings:
    return Settings.load(
        storage="external",
        database={"url": database_url, "pool_min_size": 1, "pool_max_size": 2},
        redis={"url": redis_url, "key_prefix": f"dims{uuid4().hex[:8]}"},
        embedding={"provider": "hashing", "dimensions": dimensions},
        llm={"provider": "offline"},
        auth={"jwt_secret": JWT_SECRET},
    )


async def _execute(dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def test_upgrade_at_head_refuses_another_dimension_and_changes_nothing(
    database_factory: DatabaseFactory,
) -> None:
    dsn = await database_factory()
    before = await fetch_column(dsn, SCHEMA_FINGERPRINT)
    with pytest.raises(ConfigurationError, match=r"dimension 4: .*are vector\(8\)") as caught:
        await upgrade(dsn, embedding_dimensions=OTHER_DIMENSIONS)
    assert "rules.embedding" in str(caught.value)
    assert await current(dsn) == head_revision()
    assert await fetch_column(dsn, SCHEMA_FINGERPRINT) == before
    await upgrade(dsn, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)  # the schema's own size is fine


def test_cli_upgrade_with_another_dimension_exits_1_naming_both(pg_dsn: str) -> None:
    result = CliRunner().invoke(
        db_app, ["upgrade", "--database-url", pg_dsn, "--embedding-dimensions", str(OTHER_DIMENSIONS)]
    )
    assert result.exit_code == 1, result.output
    assert "refusing to upgrade with embedding dimension 4" in result.output
    assert "vector(8)" in result.output


async def test_partial_downgrade_then_upgrade_with_another_dimension_is_refused(
    database_factory: DatabaseFactory,
) -> None:
    """0002 made the config tables' vectors; the memory tables come later. Before the check, an
    upgrade with another dimension re-created only the later tables: mixed sizes at AT_HEAD."""
    dsn = await database_factory()
    await downgrade(dsn, "0002")
    at_0002 = await fetch_column(dsn, SCHEMA_FINGERPRINT)
    with pytest.raises(ConfigurationError, match="vector\\(8\\)"):
        await upgrade(dsn, embedding_dimensions=OTHER_DIMENSIONS)
    assert await current(dsn) == "0002"
    assert await fetch_column(dsn, SCHEMA_FINGERPRINT) == at_0002
    await upgrade(dsn, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    assert set((await embedding_columns(dsn)).values()) == {TEST_EMBEDDING_DIMENSIONS}


async def test_columns_are_read_from_the_catalog_including_new_tables(
    database_factory: DatabaseFactory,
) -> None:
    """Any vector column of the schema counts (a later revision's or an operator's), partitions once."""
    dsn = await database_factory()
    columns = await embedding_columns(dsn)
    assert {"rules.embedding", "scenarios.entry_embedding", "episodes.embedding"} <= set(columns)
    assert not [name for name in columns if name.startswith("episodes_p")]
    await _execute(dsn, "CREATE TABLE operator_vectors (v halfvec(3))")
    assert (await embedding_columns(dsn))["operator_vectors.v"] == 3
    with pytest.raises(ConfigurationError, match=r"operator_vectors\.v=3"):
        await upgrade(dsn, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)


async def _make_mixed(dsn: str) -> None:
    """What a downgrade to 0004 and an upgrade with another size did before the check."""
    await _execute(dsn, f"ALTER TABLE episodes ALTER COLUMN embedding TYPE vector({OTHER_DIMENSIONS})")


async def test_current_reports_mixed_dimensions(database_factory: DatabaseFactory) -> None:
    dsn = await database_factory()
    await _make_mixed(dsn)
    result = await asyncio.to_thread(CliRunner().invoke, db_app, ["current", "--database-url", dsn])
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{head_revision()} (AT_HEAD; code head {head_revision()})"
    assert lines[1].startswith("embedding dimensions: MIXED 4, 8 (")
    assert "episodes.embedding=4" in lines[1] and "rules.embedding=8" in lines[1]
    assert "mixed dimensions" in result.stderr
    for expected in (TEST_EMBEDDING_DIMENSIONS, OTHER_DIMENSIONS):  # no configuration can use it
        with pytest.raises(ConfigurationError, match="mixed dimensions"):
            await check_embedding_dimensions(dsn, expected)


@pytest.mark.redis
async def test_build_services_refuses_another_dimension_naming_both(api_dsn: str, redis_url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        await build_services(_settings(api_dsn, redis_url, OTHER_DIMENSIONS))
    message = str(caught.value)
    assert "FOCAL_EMBEDDING__DIMENSIONS is 4" in message and "vector(8)" in message


@pytest.mark.redis
async def test_ready_reports_a_dimension_change_under_a_running_process(api_dsn: str, redis_url: str) -> None:
    settings = _settings(api_dsn, redis_url, TEST_EMBEDDING_DIMENSIONS)
    async with (
        open_services(settings) as services,
        asgi_client(create_app(settings, services=services)) as client,
    ):
        assert (await client.get("/ready")).status_code == 200
        await _execute(api_dsn, f"ALTER TABLE rules ALTER COLUMN embedding TYPE vector({OTHER_DIMENSIONS})")
        response = await client.get("/ready")
    assert response.status_code == 503
    schema = response.json()["error"]["details"]["checks"]["schema"]
    assert "FOCAL_EMBEDDING__DIMENSIONS is 8" in schema and "rules.embedding=4" in schema


@pytest.mark.redis
def test_focal_serve_refuses_another_dimension(
    api_dsn: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run in the main thread, as `focal serve` installs signal handlers."""
    environment = {
        "FOCAL_DATABASE_URL": api_dsn,
        "FOCAL_REDIS_URL": redis_url,
        "FOCAL_AUTH__JWT_SECRET": JWT_SECRET,
        "FOCAL_EMBEDDING__DIMENSIONS": str(OTHER_DIMENSIONS),
        "FOCAL_SERVER__PORT": "0",
    }
    # The `focal` callback reconfigures logging process-wide; keep the test session's.
    monkeypatch.setattr("focal.logging.configure_logging", lambda *args, **kwargs: None)
    result = CliRunner().invoke(focal_app, ["serve"], env=environment)
    assert result.exit_code == 1, result.output
    assert "FOCAL_EMBEDDING__DIMENSIONS is 4" in result.output and "vector(8)" in result.output


@pytest.fixture
async def api_dsn(database_factory: DatabaseFactory) -> str:
    return await database_factory()
