"""Alembic environment for Focal's PostgreSQL schema (async, asyncpg through SQLAlchemy).

How a run gets its inputs
-------------------------
- **DSN**: the config attribute ``database_url`` (set by ``focal.db.migrate``), else
  ``-x database_url=...`` on the Alembic CLI. The app's DSN format is accepted
  (``postgresql://user:pass@host:port/db``) and converted to ``postgresql+asyncpg://``.
- **Embedding dimension**: revisions call ``focal.db.migrations_support.embedding_dimensions()``
  (config attribute ``embedding_dimensions``, else ``-x embedding_dimensions=N``, else 1536).
  When the run states a dimension (every ``focal db upgrade`` does), the schema's existing
  vector columns must all have it: otherwise the run refuses before any revision runs, so a
  schema never ends up with columns of two sizes.
- **Forced audit downgrade**: config attribute ``force_audit_downgrade`` (``focal db downgrade
  --force``) or ``-x force_audit_downgrade=true`` lets a downgrade drop audit tables with rows.

The revision chain (fixed ids, one linear history; add new revisions at the end)::

    0001 vector extension  <- 0002 config tables <- 0003 audit tables
                           <- 0004 profile tables <- 0005 memory tables

Each revision's ``downgrade`` drops everything its ``upgrade`` created (tables, types, functions,
triggers), so ``downgrade base`` leaves only ``alembic_version``.

Concurrency: all revisions of one run execute in one transaction that first takes
``pg_advisory_xact_lock(MIGRATION_LOCK_KEY)``. Several processes upgrading at once therefore
queue on the lock; the first applies the revisions, the others then read the version table,
find it at head and do nothing. No revision may use statements that cannot run in a transaction
(e.g. ``CREATE INDEX CONCURRENTLY``).
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from focal.db.migrations_support import check_upgrade_dimensions, stated_embedding_dimensions

# Any fixed 64-bit number shared by every Focal process: "focal" in ASCII.
MIGRATION_LOCK_KEY = 0x666F63616C

config = context.config
if config.config_file_name is not None and "database_url" not in config.attributes:
    # The plain Alembic CLI with alembic.ini: use its logging setup. Focal's Python API builds
    # its Config in code and leaves the application's logging alone.
    from logging.config import fileConfig

    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = config.attributes.get("database_url") or context.get_x_argument(as_dictionary=True).get(
        "database_url"
    )
    if not url:
        raise RuntimeError(
            "no database URL: use `focal db upgrade --database-url ...` or -x database_url=..."
        )
    return to_sqlalchemy_url(str(url))


def to_sqlalchemy_url(dsn: str) -> str:
    """``postgresql://`` / ``postgres://`` -> ``postgresql+asyncpg://`` (other parts unchanged)."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+asyncpg://" + dsn[len(prefix) :]
    raise RuntimeError(f"not a PostgreSQL URL (expected postgresql://...): {dsn.split('://')[0]}://...")


def _run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, transaction_per_migration=False)
    with context.begin_transaction():
        # Held until this transaction commits: concurrent upgraders run one after another.
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        dimensions = stated_embedding_dimensions()
        if dimensions is not None:  # checked under the lock: no concurrent run adds columns meanwhile
            check_upgrade_dimensions(connection, dimensions)
        context.run_migrations()


async def _run_async_migrations() -> None:
    engine = create_async_engine(_database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("Focal migrations run online only (they take an advisory lock)")
asyncio.run(_run_async_migrations())
