"""``translate_pg_errors`` on real driver errors: Focal's own message for clients, the driver's
text (and its DETAIL, which names other rows' keys) in the log line only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from focal.db.translate import translate_pg_errors
from focal.errors import ConflictError, InvalidDataError, NotFoundError, StoreError
from tests.support import new_tenant

pytestmark = pytest.mark.postgres

DRIVER_WORDS = (
    "duplicate key",
    "violates",
    "DETAIL",
    "Key (",
    "invalid input",
    "Error:",
    "translate_",
    "children_",
)


@pytest_asyncio.fixture(loop_scope="session")
async def connection(pg_dsn: str) -> AsyncIterator[Any]:
    """A connection of its own: its temp tables die with it (pooled ones would outlive the test)."""
    held = await asyncpg.connect(pg_dsn)
    try:
        await held.execute(
            """
            CREATE TEMP TABLE translate_parents (id int PRIMARY KEY);
            CREATE TEMP TABLE translate_children (
                id int CONSTRAINT children_pkey PRIMARY KEY,
                parent_id int CONSTRAINT children_parent_fkey REFERENCES translate_parents (id),
                amount int NOT NULL CONSTRAINT children_amount_check CHECK (amount >= 0),
                code varchar(3)
            );
            INSERT INTO translate_parents VALUES (1);
            INSERT INTO translate_children VALUES (1, 1, 5, 'abc');
            """
        )
        yield held
    finally:
        await held.close()


INSERT = "INSERT INTO translate_children VALUES ($1, $2, $3, $4)"
CASES: dict[str, tuple[type[StoreError], str, tuple[Any, ...], str]] = {
    "unique": (ConflictError, INSERT, (1, 1, 5, "abc"), "a record with the same key already exists"),
    "foreign-key": (NotFoundError, INSERT, (2, 99, 5, "abc"), "a record it refers to does not exist"),
    "check": (InvalidDataError, INSERT, (3, 1, -1, "abc"), "a value breaks a rule of the schema"),
    "not-null": (InvalidDataError, INSERT, (4, 1, None, "abc"), "a required value is missing"),
    "too-long": (
        InvalidDataError,
        INSERT,
        (5, 1, 5, "abcd"),
        "a text value is longer than its column allows",
    ),
    "invalid-text": (
        InvalidDataError,
        "SELECT $1::text::uuid",
        ("not-a-uuid",),
        "a value is malformed for its type",
    ),
    "client-side": (
        InvalidDataError,
        INSERT,
        (7, 1, "five", "abc"),
        "a value cannot be encoded for PostgreSQL",
    ),
    "raise": (
        StoreError,
        "DO $$ BEGIN RAISE EXCEPTION 'secret % of other tenant', 42; END $$",
        (),
        "unexpected database error (SQLSTATE P0001)",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_clients_get_focal_words_and_the_log_gets_the_driver_text(
    connection: Any, case: tuple[type[StoreError], str, tuple[Any, ...], str]
) -> None:
    expected, sql, arguments, reason = case
    tenant = new_tenant()
    with capture_logs() as logs, pytest.raises(expected) as caught:
        async with translate_pg_errors("insert_child", tenant_id=tenant):
            await connection.execute(sql, *arguments)
    assert type(caught.value) is expected
    assert str(caught.value) == f"insert_child: {reason}"
    assert not any(word in str(caught.value) for word in DRIVER_WORDS)
    driver_text = str(caught.value.__cause__)
    [line] = [entry for entry in logs if entry["event"] == "store error"]
    assert line["detail"] == driver_text and line["tenant_id"] == str(tenant)
    assert line["operation"] == "insert_child" and line["message"] == str(caught.value)
    assert await connection.fetchval("SELECT count(*) FROM translate_children") == 1  # nothing changed


async def test_stores_name_the_conflicts_they_know(connection: Any) -> None:
    known = {"children_pkey": "child 1 already exists", "children_parent_fkey": "parent 99 not found"}
    with pytest.raises(ConflictError, match=r"^child 1 already exists$"):
        async with translate_pg_errors("insert_child", messages=known):
            await connection.execute(INSERT, 1, 1, 5, "abc")
    with pytest.raises(NotFoundError, match=r"^parent 99 not found$"):
        async with translate_pg_errors("insert_child", messages=known):
            await connection.execute(INSERT, 2, 99, 5, "abc")
    # ``duplicate`` covers unique violations of unnamed (e.g. per-partition) indexes, nothing else.
    with pytest.raises(ConflictError, match=r"^child exists$"):
        async with translate_pg_errors("insert_child", duplicate="child exists"):
            await connection.execute(INSERT, 1, 1, 5, "abc")
    with pytest.raises(InvalidDataError, match=r"^insert_child: a value breaks a rule of the schema$"):
        async with translate_pg_errors("insert_child", duplicate="child exists"):
            await connection.execute(INSERT, 3, 1, -1, "abc")
