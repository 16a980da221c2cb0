"""Schema migrations from Python: Alembic's command API on the packaged migration scripts.

``upgrade`` / ``downgrade`` run Alembic in a worker thread (its ``env.py`` drives SQLAlchemy's
async engine with its own event loop), so they are safe to await from an application loop.
``schema_status`` / ``ensure_schema_at_head`` back the readiness check and the start-up refusal
of ``focal serve`` when the database is behind or ahead of the code; ``check_embedding_dimensions``
does the same for the size of the embedding columns (read from the catalog, all of them).

Guards (both in the migration run itself, so the plain Alembic CLI gets them too): ``upgrade``
refuses another embedding dimension than the schema's columns have, and ``downgrade`` below the
audit revision refuses while the audit tables hold rows unless ``force=True``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from asyncpg.pool import PoolConnectionProxy
from sqlalchemy import exc as sqlalchemy_exc

from focal.db.migrations_support import (
    DEFAULT_EMBEDDING_DIMENSIONS,
    EMBEDDING_COLUMNS_SQL,
    EMBEDDING_DIMENSIONS_ATTRIBUTE,
    FORCE_AUDIT_DOWNGRADE_ATTRIBUTE,
    dimension_mismatch,
)
from focal.db.pool import describe_dsn
from focal.errors import ConfigurationError, SchemaVersionError, StoreConnectionError

__all__ = [
    "RevisionInfo",
    "SchemaState",
    "SchemaStatus",
    "check_embedding_dimensions",
    "current",
    "downgrade",
    "embedding_columns",
    "ensure_schema_at_head",
    "head_revision",
    "history",
    "schema_status",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
UPGRADE_HINT = "run `focal db upgrade`"


def alembic_config(dsn: str | None = None, *, embedding_dimensions: int | None = None) -> Config:
    """An Alembic ``Config`` built in code (no ini file), pointing at the packaged scripts."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if dsn is not None:
        config.attributes["database_url"] = dsn  # attributes: no ini interpolation of "%" in passwords
    if embedding_dimensions is not None:
        config.attributes[EMBEDDING_DIMENSIONS_ATTRIBUTE] = embedding_dimensions
    return config


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


async def upgrade(
    dsn: str, revision: str = "head", *, embedding_dimensions: int = DEFAULT_EMBEDDING_DIMENSIONS
) -> None:
    """Upgrade the database to ``revision``; a no-op when already there. Safe to run concurrently.

    ``ConfigurationError`` (and nothing applied) when the schema already has embedding columns
    of another dimension than ``embedding_dimensions``, even when there is nothing to upgrade.
    """
    config = alembic_config(dsn, embedding_dimensions=embedding_dimensions)
    await _run(command.upgrade, config, revision, dsn=dsn)


async def downgrade(dsn: str, revision: str, *, force: bool = False) -> None:
    """Downgrade to ``revision`` (``"base"`` removes every Focal object).

    Going below the audit revision drops the audit trail: refused (``SchemaVersionError``,
    nothing changed) while the audit tables hold rows, unless ``force``.
    """
    config = alembic_config(dsn)
    config.attributes[FORCE_AUDIT_DOWNGRADE_ATTRIBUTE] = force
    await _run(command.downgrade, config, revision, dsn=dsn)


async def _run(function: Callable[[Config, str], None], config: Config, revision: str, *, dsn: str) -> None:
    try:
        await asyncio.to_thread(function, config, revision)
    except CommandError as exc:  # e.g. an unknown revision
        raise SchemaVersionError(f"migration to {revision!r} failed: {exc}") from exc
    except sqlalchemy_exc.DBAPIError as exc:
        if _is_connection_failure(exc):
            raise StoreConnectionError(
                f"cannot migrate PostgreSQL at {describe_dsn(dsn)}: {exc.orig}"
            ) from exc
        # A statement of a revision failed: the run's single transaction rolled back.
        raise SchemaVersionError(f"migration to {revision!r} failed, nothing applied: {exc.orig}") from exc
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreConnectionError(
            f"cannot migrate PostgreSQL at {describe_dsn(dsn)}: {type(exc).__name__}: {exc}"
        ) from exc


def _is_connection_failure(exc: sqlalchemy_exc.DBAPIError) -> bool:
    """Could not connect or lost the connection (SQLSTATE classes 08, 28, 3D, 57; 53300)."""
    if isinstance(exc, sqlalchemy_exc.InterfaceError) or exc.connection_invalidated:
        return True
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None) or "")
    return sqlstate[:2] in {"08", "28", "3D", "57"} or sqlstate == "53300"


async def current(target: str | asyncpg.Pool) -> str | None:
    """The revision the database is at, or ``None`` for a database Alembic never touched."""
    try:
        if isinstance(target, str):
            connection = await asyncpg.connect(target)
            try:
                return await _read_version(connection)
            finally:
                await connection.close()
        async with target.acquire() as pooled:
            return await _read_version(pooled)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        where = describe_dsn(target) if isinstance(target, str) else "the pool's server"
        raise StoreConnectionError(f"cannot read the schema version at {where}: {exc}") from exc


async def _read_version(connection: asyncpg.Connection | PoolConnectionProxy) -> str | None:
    exists = await connection.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
    if not exists:
        return None
    rows = await connection.fetch("SELECT version_num FROM alembic_version")
    if len(rows) > 1:
        raise SchemaVersionError(f"several schema heads in alembic_version: {[r[0] for r in rows]}")
    return str(rows[0][0]) if rows else None


@dataclass(frozen=True)
class RevisionInfo:
    revision: str
    down_revision: str | None
    description: str


def history() -> list[RevisionInfo]:
    """Every revision, oldest first."""
    revisions = []
    for script in _script().walk_revisions():
        down = script.down_revision
        if isinstance(down, tuple | list):  # a merge point; Focal keeps a linear chain
            down = ",".join(down)
        revisions.append(RevisionInfo(script.revision, down, (script.doc or "").strip()))
    return list(reversed(revisions))


def head_revision() -> str:
    """The newest revision this code knows."""
    head = _script().get_current_head()
    if head is None:
        raise SchemaVersionError("no migration revisions are packaged with this Focal")
    return head


class SchemaState(StrEnum):
    EMPTY = "EMPTY"  # no Focal schema yet
    BEHIND = "BEHIND"  # a known older revision: run `focal db upgrade`
    AT_HEAD = "AT_HEAD"
    AHEAD = "AHEAD"  # a revision this code does not know: the database is newer than the code


@dataclass(frozen=True)
class SchemaStatus:
    state: SchemaState
    current: str | None
    head: str

    @property
    def is_at_head(self) -> bool:
        return self.state is SchemaState.AT_HEAD


async def schema_status(target: str | asyncpg.Pool) -> SchemaStatus:
    """Compare the database's revision (DSN or pool) with the code's head."""
    at = await current(target)
    head = head_revision()
    if at is None:
        state = SchemaState.EMPTY
    elif at == head:
        state = SchemaState.AT_HEAD
    elif at in {info.revision for info in history()}:
        state = SchemaState.BEHIND
    else:
        state = SchemaState.AHEAD
    return SchemaStatus(state=state, current=at, head=head)


async def ensure_schema_at_head(target: str | asyncpg.Pool) -> SchemaStatus:
    """Return the status when the schema is at head, else raise ``SchemaVersionError`` naming the fix."""
    status = await schema_status(target)
    if status.state is SchemaState.EMPTY:
        raise SchemaVersionError(
            f"the database has no Focal schema (code expects {status.head}): {UPGRADE_HINT}"
        )
    if status.state is SchemaState.BEHIND:
        raise SchemaVersionError(
            f"the database schema is at {status.current}, behind the code's {status.head}: {UPGRADE_HINT}"
        )
    if status.state is SchemaState.AHEAD:
        raise SchemaVersionError(
            f"the database schema is at {status.current}, which this Focal does not know (its newest is "
            f"{status.head}): the database was migrated by a newer Focal; run that version, or downgrade "
            f"with it (`focal db downgrade {status.head}`)"
        )
    return status


async def embedding_columns(target: str | asyncpg.Pool) -> dict[str, int]:
    """Every ``vector``/``halfvec`` column of the schema, read from the catalog: ``table.column`` -> D.

    All of them, whichever revision (or operator) made them, so the check keeps up with new
    revisions without a list to maintain.
    """
    try:
        if isinstance(target, str):
            connection = await asyncpg.connect(target)
            try:
                rows = await connection.fetch(EMBEDDING_COLUMNS_SQL)
            finally:
                await connection.close()
        else:
            rows = await target.fetch(EMBEDDING_COLUMNS_SQL)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        where = describe_dsn(target) if isinstance(target, str) else "the pool's server"
        raise StoreConnectionError(f"cannot read the embedding columns at {where}: {exc}") from exc
    return {str(row["column_name"]): int(row["dimensions"]) for row in rows}


async def check_embedding_dimensions(target: str | asyncpg.Pool, expected: int) -> dict[str, int]:
    """Every embedding column's dimension; ``ConfigurationError`` naming both sizes if one differs.

    The dimension is fixed when a revision creates the columns; a process configured with
    another ``FOCAL_EMBEDDING__DIMENSIONS`` would fail on every write, so it refuses to start (and
    ``/ready`` reports it, should the schema change under a running process).
    """
    columns = await embedding_columns(target)
    problem = dimension_mismatch(columns, expected)
    if problem is not None:
        raise ConfigurationError(
            f"FOCAL_EMBEDDING__DIMENSIONS is {expected}, but {problem}: configure the dimension the "
            "schema was created with (and an embedding model of that size), or migrate a fresh database"
        )
    return columns
