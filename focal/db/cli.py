"""``focal db upgrade | downgrade REV | current | history | grant``: schema management from the shell.

The database is ``--database-url``, else ``FOCAL_DATABASE__URL`` (settings). Without either, the
embedded server in ``--data-dir`` (default ``./.focal``) is used: when ``focal serve`` is already
running on it, its server is reused; otherwise it is started for the command and stopped after.
``--no-embedded`` turns that off, so a missing URL becomes an error instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from focal.errors import FocalError

db_app = typer.Typer(help="Manage the PostgreSQL schema (Alembic migrations).", no_args_is_help=True)

T = TypeVar("T")

# Alembic announces each of its plugins at INFO when imported; keep its "Running upgrade" lines.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option("--database-url", help="PostgreSQL DSN; default: FOCAL_DATABASE__URL", show_default=False),
]
EmbeddedOption = Annotated[
    bool,
    typer.Option("--embedded/--no-embedded", help="Use the embedded server in --data-dir when no URL is set"),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Embedded data directory; default: FOCAL_DATA_DIR or ./.focal"),
]


@contextmanager
def _database(database_url: str | None, embedded: bool, data_dir: Path | None) -> Iterator[str]:
    """The DSN to work on; starts (and afterwards stops) the embedded server when needed."""
    if database_url:
        yield database_url
        return
    from focal.settings import Settings

    settings = Settings.load()
    if settings.database.url:
        yield settings.database.url
        return
    if not embedded:
        raise typer.BadParameter("no database: pass --database-url or set FOCAL_DATABASE__URL")
    from focal.db.embedded import EmbeddedPostgres, replace_database

    postgres_dir = (data_dir or settings.data_dir) / "postgres"
    running = EmbeddedPostgres.find_running(postgres_dir)
    if running is not None:
        yield replace_database(running, "focal")
        return
    server = EmbeddedPostgres(postgres_dir)
    with server:
        yield server.dsn


def _run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(work())
    except FocalError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc


@db_app.command()
def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
    database_url: DatabaseUrlOption = None,
    embedding_dimensions: Annotated[
        int | None,
        typer.Option(help="vector(D) size for new tables; default: FOCAL_EMBEDDING__DIMENSIONS"),
    ] = None,
    embedded: EmbeddedOption = True,
    data_dir: DataDirOption = None,
) -> None:
    """Upgrade the schema to REVISION (default: head). Safe to run from several processes at once."""
    from focal.db import migrate  # lazy: `focal --help` need not load Alembic

    if embedding_dimensions is None:
        from focal.settings import Settings

        embedding_dimensions = Settings.load().embedding.dimensions
    dimensions = embedding_dimensions
    with _database(database_url, embedded, data_dir) as dsn:
        _run(lambda: migrate.upgrade(dsn, revision, embedding_dimensions=dimensions))
        typer.echo(f"schema at {_run(lambda: migrate.current(dsn))}")


@db_app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, or 'base' to remove everything")],
    database_url: DatabaseUrlOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Drop the audit tables even when they hold rows (the audit trail)")
    ] = False,
    embedded: EmbeddedOption = True,
    data_dir: DataDirOption = None,
) -> None:
    """Downgrade the schema to REVISION. Refuses to drop audit tables that hold rows unless --force."""
    from focal.db import migrate  # lazy: `focal --help` need not load Alembic

    with _database(database_url, embedded, data_dir) as dsn:
        _run(lambda: migrate.downgrade(dsn, revision, force=force))
        typer.echo(f"schema at {_run(lambda: migrate.current(dsn)) or 'base'}")


@db_app.command()
def current(
    database_url: DatabaseUrlOption = None,
    embedded: EmbeddedOption = True,
    data_dir: DataDirOption = None,
) -> None:
    """Print the database's revision, how it compares with the code, and its embedding dimension.

    Exits 1 when the embedding columns have mixed dimensions (no configuration can use them).
    """
    from focal.db import migrate  # lazy: `focal --help` need not load Alembic

    with _database(database_url, embedded, data_dir) as dsn:
        status = _run(lambda: migrate.schema_status(dsn))
        columns = _run(lambda: migrate.embedding_columns(dsn))
    typer.echo(f"{status.current or 'base'} ({status.state.value}; code head {status.head})")
    sizes = sorted(set(columns.values()))
    if not sizes:
        typer.echo("embedding dimensions: no embedding columns yet")
    elif len(sizes) == 1:
        typer.echo(f"embedding dimensions: {sizes[0]} ({len(columns)} columns)")
    else:
        listed = ", ".join(f"{name}={size}" for name, size in sorted(columns.items()))
        typer.echo(f"embedding dimensions: MIXED {', '.join(map(str, sizes))} ({listed})")
        typer.echo(
            "error: the embedding columns have mixed dimensions: no FOCAL_EMBEDDING__DIMENSIONS can use "
            "this schema; downgrade below the odd columns and upgrade again with the dimension of the "
            "others, or migrate a fresh database",
            err=True,
        )
        raise typer.Exit(code=1)


@db_app.command()
def grant(
    role: Annotated[str, typer.Option("--role", help="The (existing) role `focal serve` connects as")],
    database_url: DatabaseUrlOption = None,
    embedded: EmbeddedOption = True,
    data_dir: DataDirOption = None,
) -> None:
    """Grant ROLE what the service needs, and only SELECT/INSERT on the audit tables.

    Run it as the owner of the tables (the role that runs `focal db upgrade`), after every upgrade.
    ROLE must not own the tables nor be a superuser: those could disable the audit triggers.
    """
    from focal.db.roles import grant_service_role  # lazy: `focal --help` need not load asyncpg

    with _database(database_url, embedded, data_dir) as dsn:
        granted = _run(lambda: grant_service_role(dsn, role))
    typer.echo(f"granted to {granted.role} in schema {granted.schema}:")
    typer.echo(f"  SELECT, INSERT, UPDATE, DELETE: {', '.join(granted.read_write) or '-'}")
    typer.echo(f"  SELECT, INSERT only (audit, append-only): {', '.join(granted.append_only) or '-'}")
    typer.echo(f"  SELECT only: {', '.join(granted.read_only) or '-'}")


@db_app.command()
def history() -> None:
    """List the revisions this code knows, oldest first."""
    from focal.db import migrate  # lazy: `focal --help` need not load Alembic

    for info in migrate.history():
        typer.echo(f"{info.down_revision or 'base'} -> {info.revision}: {info.description.splitlines()[0]}")
