"""Alembic migrations on a real PostgreSQL: up, down, again, concurrently, and the status check.

Written against whatever revisions exist, so new revisions are covered without editing this file.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import textwrap
import time
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from focal.db import migrate
from focal.db.cli import db_app
from focal.db.embedded import replace_database
from focal.db.migrate import (
    SchemaState,
    check_embedding_dimensions,
    current,
    downgrade,
    ensure_schema_at_head,
    head_revision,
    history,
    schema_status,
    upgrade,
)
from focal.errors import ConfigurationError, SchemaVersionError, StoreConnectionError
from tests.support import TEST_EMBEDDING_DIMENSIONS, DatabaseFactory

pytestmark = pytest.mark.postgres

REPO_ROOT = Path(__file__).resolve().parents[3]

# Everything in schema public except alembic_version (and its primary key index).
LEFTOVER_OBJECTS = """
SELECT 'relation ' || c.relname FROM pg_class c
 WHERE c.relnamespace = 'public'::regnamespace
   AND c.relname <> 'alembic_version'
   AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indexrelid = c.oid
                   AND i.indrelid = to_regclass('public.alembic_version'))
UNION ALL
SELECT 'type ' || t.typname FROM pg_type t
 WHERE t.typnamespace = 'public'::regnamespace AND t.typrelid = 0 AND t.typelem = 0
UNION ALL
SELECT 'function ' || p.proname FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
UNION ALL
SELECT 'trigger ' || tg.tgname FROM pg_trigger tg WHERE NOT tg.tgisinternal
UNION ALL
SELECT 'extension ' || e.extname FROM pg_extension e WHERE e.extname <> 'plpgsql'
ORDER BY 1
"""

# A fingerprint of the Focal schema: columns, indexes, constraints, triggers and functions in public.
SCHEMA_FINGERPRINT = """
SELECT c.relname || '.' || a.attname || ':' || format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
 WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
   AND c.relname <> 'alembic_version' AND c.relkind IN ('r', 'p', 'v', 'm')
UNION ALL
SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename <> 'alembic_version'
UNION ALL
SELECT conrelid::regclass::text || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
 WHERE connamespace = 'public'::regnamespace AND conrelid <> to_regclass('public.alembic_version')
UNION ALL
SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'function ' || p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
ORDER BY 1
"""

TABLE_OIDS = (
    "SELECT relname || ' ' || oid::text FROM pg_class "
    "WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
)


async def fetch_column(dsn: str, query: str) -> list[str]:
    connection = await asyncpg.connect(dsn)
    try:
        return [row[0] for row in await connection.fetch(query)]
    finally:
        await connection.close()


async def test_upgrade_on_empty_database_reaches_head_and_a_second_run_changes_nothing(
    database_factory: DatabaseFactory,
) -> None:
    dsn = await database_factory(migrate=False)
    assert await current(dsn) is None
    await upgrade(dsn, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    assert await current(dsn) == head_revision()
    assert "extension vector" in await fetch_column(dsn, LEFTOVER_OBJECTS)
    at_head = await fetch_column(dsn, SCHEMA_FINGERPRINT)
    await upgrade(dsn, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    assert await current(dsn) == head_revision()
    assert await fetch_column(dsn, SCHEMA_FINGERPRINT) == at_head


async def test_stepwise_downgrade_to_base_leaves_nothing_and_upgrade_works_again(
    database_factory: DatabaseFactory,
) -> None:
    """Up one revision at a time, then down one at a time: each downgrade restores the previous
    schema exactly, base leaves no Focal object behind, and a second upgrade rebuilds the same schema."""
    dsn = await database_factory(migrate=False)
    fingerprints: dict[str | None, list[str]] = {None: await fetch_column(dsn, SCHEMA_FINGERPRINT)}
    for info in history():
        await upgrade(dsn, info.revision, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
        fingerprints[info.revision] = await fetch_column(dsn, SCHEMA_FINGERPRINT)
    for info in reversed(history()):
        await downgrade(dsn, info.down_revision or "base")
        assert await current(dsn) == info.down_revision
        assert await fetch_column(dsn, SCHEMA_FINGERPRINT) == fingerprints[info.down_revision], info.revision
    assert await fetch_column(dsn, LEFTOVER_OBJECTS) == []
    await upgrade(dsn, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    assert await current(dsn) == head_revision()
    assert await fetch_column(dsn, SCHEMA_FINGERPRINT) == fingerprints[head_revision()]


# A value of each column type the generic row filler knows; vectors are built from the typmod.
GENERIC_VALUES = {
    "uuid": "gen_random_uuid()",
    "text": "'x'",
    "character varying": "'x'",
    "integer": "1",
    "smallint": "1",
    "bigint": "1",
    "double precision": "0.5",
    "real": "0.5",
    "numeric": "0.5",
    "boolean": "false",
    "jsonb": "'{}'",
    "json": "'{}'",
    "timestamp with time zone": "now()",
    "date": "current_date",
}
REQUIRED_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, NULL) AS type_name, a.atttypmod
  FROM pg_attribute a
 WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
   AND a.attnotnull AND NOT a.atthasdef AND a.attgenerated = ''
"""


async def insert_generic_rows(connection: asyncpg.Connection) -> list[str]:
    """Insert one row into every table where type-based placeholder values pass its constraints.

    Returns the tables that got a row. Tables whose CHECKs or foreign keys the placeholders
    cannot satisfy are left empty (each attempt runs in its own savepoint).
    """
    tables = await connection.fetch(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' "
        "AND relname <> 'alembic_version' ORDER BY relname"
    )
    filled = []
    for (table,) in tables:
        names, values = [], []
        for name, type_name, typmod in await connection.fetch(REQUIRED_COLUMNS, table):
            if type_name in ("vector", "halfvec"):
                values.append(f"array_fill(0.1::real, ARRAY[{typmod}])::{type_name}({typmod})")
            elif type_name in GENERIC_VALUES:
                values.append(GENERIC_VALUES[type_name])
            else:
                break
            names.append(f'"{name}"')
        else:
            columns = f"({', '.join(names)}) VALUES ({', '.join(values)})" if names else "DEFAULT VALUES"
            try:
                async with connection.transaction():
                    await connection.execute(f'INSERT INTO "{table}" {columns}')
                filled.append(table)
            except asyncpg.PostgresError:
                continue
    return filled


async def test_upgrade_keeps_existing_rows_and_tables(database_factory: DatabaseFactory) -> None:
    """Rows written at any earlier revision survive the upgrade to head, and no later revision
    re-creates a table an earlier one made (same oid at head)."""
    first = history()[0].revision
    dsn = await database_factory(migrate=False)
    await upgrade(dsn, first, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    connection = await asyncpg.connect(dsn)
    vector = "[1,2,3,4,5,6,7,8]"
    assert TEST_EMBEDDING_DIMENSIONS == 8  # every vector column of the schema has the one dimension
    try:
        await connection.execute("CREATE TABLE operator_notes (note text, embedding vector(8))")
        await connection.execute(f"INSERT INTO operator_notes VALUES ('kept', '{vector}')")
    finally:
        await connection.close()
    await upgrade(dsn, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    rows = await fetch_column(dsn, "SELECT note || ' ' || embedding::text FROM operator_notes")
    assert rows == [f"kept {vector}"]

    for info in history()[1:-1]:  # every intermediate revision
        dsn = await database_factory(migrate=False)
        await upgrade(dsn, info.revision, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
        connection = await asyncpg.connect(dsn)
        try:
            filled = await insert_generic_rows(connection)
            assert filled, f"no table of revision {info.revision} took a placeholder row"
            before = set(await fetch_column(dsn, TABLE_OIDS))
            await connection.close()
            await upgrade(dsn, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
            connection = await asyncpg.connect(dsn)
            for table in filled:
                assert await connection.fetchval(f'SELECT count(*) FROM "{table}"') == 1, (
                    info.revision,
                    table,
                )
        finally:
            await connection.close()
        assert before <= set(await fetch_column(dsn, TABLE_OIDS)), info.revision


@pytest.mark.slow
async def test_concurrent_upgrades_from_four_processes(
    database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    """Four processes, released together once all have imported Focal, run `focal db upgrade`."""
    dsn = await database_factory(migrate=False)
    go = tmp_path / "go"
    script = textwrap.dedent(
        f"""
        import os, pathlib, sys, time
        from focal.cli import app
        pathlib.Path({str(tmp_path)!r}, f"ready-{{os.getpid()}}").touch()
        deadline = time.monotonic() + 60
        while not os.path.exists({str(go)!r}):
            if time.monotonic() > deadline:
                sys.exit("never released")
            time.sleep(0.005)
        app(["db", "upgrade", *sys.argv[1:]])
        """
    )
    processes = [
        await asyncio.create_subprocess_exec(
            *[sys.executable, "-c", script, "--database-url", dsn],
            *["--embedding-dimensions", str(TEST_EMBEDDING_DIMENSIONS)],
            cwd=REPO_ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    deadline = time.monotonic() + 60
    while sum(name.startswith("ready-") for name in os.listdir(tmp_path)) < 4:
        if time.monotonic() > deadline or any(p.returncode is not None for p in processes):
            break  # a child is stuck or died early: the assertions below report why
        await asyncio.sleep(0.02)
    os.close(os.open(go, os.O_CREAT | os.O_WRONLY))
    outcomes = [await asyncio.wait_for(process.communicate(), timeout=120) for process in processes]
    codes = [process.returncode for process in processes]
    assert codes == [0, 0, 0, 0], [err.decode()[-2000:] for _, err in outcomes]
    assert [out.decode().strip() for out, _ in outcomes] == [f"schema at {head_revision()}"] * 4
    assert await current(dsn) == head_revision()
    assert await fetch_column(dsn, "SELECT version_num FROM alembic_version") == [head_revision()]


def await_embedding_columns(dsn: str) -> dict[str, int]:
    return asyncio.run(migrate.embedding_columns(dsn))


def test_cli_current_and_history(pg_dsn: str) -> None:
    runner = CliRunner()
    shown = runner.invoke(db_app, ["current", "--database-url", pg_dsn])
    assert shown.exit_code == 0, shown.output
    columns = await_embedding_columns(pg_dsn)
    assert shown.stdout.splitlines() == [
        f"{head_revision()} (AT_HEAD; code head {head_revision()})",
        f"embedding dimensions: {TEST_EMBEDDING_DIMENSIONS} ({len(columns)} columns)",
    ]
    listed = runner.invoke(db_app, ["history"])
    assert listed.exit_code == 0, listed.output
    assert [line.split(":")[0] for line in listed.stdout.splitlines()] == [
        f"{info.down_revision or 'base'} -> {info.revision}" for info in history()
    ]


def test_cli_reports_an_unknown_revision_as_an_error(pg_dsn: str) -> None:
    result = CliRunner().invoke(db_app, ["downgrade", "no_such_revision", "--database-url", pg_dsn])
    assert result.exit_code == 1
    assert "no_such_revision" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


async def test_schema_status_reports_each_state(database_factory: DatabaseFactory) -> None:
    revisions = [info.revision for info in history()]
    assert len(revisions) >= 2, "a BEHIND state needs at least two revisions"
    head = head_revision()
    dsn = await database_factory(migrate=False)

    status = await schema_status(dsn)
    assert (status.state, status.current, status.head) == (SchemaState.EMPTY, None, head)
    with pytest.raises(SchemaVersionError, match="focal db upgrade"):
        await ensure_schema_at_head(dsn)

    await upgrade(dsn, revisions[-2], embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    status = await schema_status(dsn)
    assert (status.state, status.current) == (SchemaState.BEHIND, revisions[-2])
    with pytest.raises(SchemaVersionError, match="focal db upgrade"):
        await ensure_schema_at_head(dsn)

    await upgrade(dsn, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    status = await schema_status(dsn)
    assert (status.state, status.current, status.is_at_head) == (SchemaState.AT_HEAD, head, True)
    assert await ensure_schema_at_head(dsn) == status

    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    finally:
        await connection.close()
    status = await schema_status(dsn)
    assert (status.state, status.current) == (SchemaState.AHEAD, "9999_from_the_future")
    with pytest.raises(SchemaVersionError, match="newer Focal"):
        await ensure_schema_at_head(dsn)


async def test_schema_status_through_a_pool(pg_pool: asyncpg.Pool) -> None:
    status = await schema_status(pg_pool)
    assert status.state is SchemaState.AT_HEAD
    assert status.current == head_revision()


BROKEN_REVISION = '''"""A revision that fails half-way."""
from alembic import op

revision = "9999"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE created_before_the_failure (id int)")
    op.execute("SELEC 1")


def downgrade() -> None:
    op.execute("DROP TABLE created_before_the_failure")
'''


@pytest.fixture
def broken_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The packaged revisions plus a failing '9999' on top, used by focal.db.migrate for one test."""
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "9999_broken.py").write_text(BROKEN_REVISION.format(down=head_revision()))
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", scripts)
    return head_revision()


async def test_a_failing_revision_applies_nothing(
    database_factory: DatabaseFactory, broken_head: str
) -> None:
    """All revisions of a run share one transaction: a failure leaves the database as it was."""
    assert broken_head == "9999"
    dsn = await database_factory(migrate=False)
    with pytest.raises(SchemaVersionError, match="nothing applied"):
        await upgrade(dsn, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    assert await current(dsn) is None
    assert await fetch_column(dsn, LEFTOVER_OBJECTS) == []


async def test_unknown_database_is_a_connection_error(postgres_admin_dsn: str) -> None:
    missing = replace_database(postgres_admin_dsn, "focal_no_such_database")
    with pytest.raises(StoreConnectionError, match="focal_no_such_database"):
        await upgrade(missing)
    with pytest.raises(StoreConnectionError, match="focal_no_such_database"):
        await schema_status(missing)


async def test_embedding_dimensions_of_the_schema_are_checked(pg_pool: asyncpg.Pool) -> None:
    columns = await check_embedding_dimensions(pg_pool, TEST_EMBEDDING_DIMENSIONS)
    assert columns, "head has vector columns"
    assert set(columns.values()) == {TEST_EMBEDDING_DIMENSIONS}
    with pytest.raises(ConfigurationError, match="FOCAL_EMBEDDING__DIMENSIONS is 1536"):
        await check_embedding_dimensions(pg_pool, 1536)
